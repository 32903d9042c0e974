#!/usr/bin/env bash
# sockserve behind nginx's stream module, with
# examples/nginx/sockserve-stream.conf as shipped but for its ports: PROXY
# v1 from 127.0.0.9, half-close passed through. nginx runs in the
# foreground with its own configuration, pid and log files in the test's
# folder, never the system's. See lib-balancer.sh for the checks.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/shell/lib-balancer.sh"

MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
if { ! command -v nginx >/dev/null || [ ! -f $MODULE ]; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx libnginx-mod-stream >/dev/null 2>&1
fi
PATH=$PATH:/usr/sbin
command -v nginx >/dev/null && [ -f $MODULE ] ||
	skip_all "nginx or its stream module not installed (Debian packages nginx, libnginx-mod-stream; scripts/test installs them as root): nginx NOT tested"

FRONT_PORT=25018 PORT_A=25021 PORT_B=25022 READY_PORT=25023
FRONT=127.0.0.1:$FRONT_PORT
free_port_or_skip $FRONT_PORT $PORT_A $PORT_B $READY_PORT

mkdir -p nginx
sed -e "s/127\.0\.0\.1:10008/127.0.0.1:$FRONT_PORT/" \
	-e "s/127\.0\.0\.1:10011/127.0.0.1:$PORT_A/" \
	-e "s/127\.0\.0\.1:10012/127.0.0.1:$PORT_B/" \
	"$ROOT/examples/nginx/sockserve-stream.conf" >nginx/sockserve-stream.conf
cat >nginx/nginx.conf <<EOC
load_module $MODULE;
$([ "$(id -u)" = 0 ] && echo "user root;")
# One process, so that the cleanup's kill ends all of nginx.
master_process off;
pid $TRASH/nginx/nginx.pid;
error_log $TRASH/nginx/error.log info;
events { worker_connections 1024; }
include $TRASH/nginx/sockserve-stream.conf;
# A listener of the test's own to wait on: a probe of the frontend
# itself would open a backend connection, reset when the probe leaves.
http { access_log off; server { listen 127.0.0.1:$READY_PORT; return 204; } }
EOC

test_expect_success 'the shipped configuration is valid' '
	nginx -q -t -p "$TRASH/nginx" -e "$TRASH/nginx/error.log" -c "$TRASH/nginx/nginx.conf" &&
	grep -q "proxy_protocol on;" nginx/sockserve-stream.conf &&
	grep -q "proxy_half_close on;" nginx/sockserve-stream.conf
'

start_backends || exit 1
nginx -p "$TRASH/nginx" -e "$TRASH/nginx/error.log" -c "$TRASH/nginx/nginx.conf" -g "daemon off;" >nginx/stdout 2>&1 &
PIDS+=($!)
wait_port $READY_PORT || { cat nginx/stdout nginx/error.log; exit 1; }

test_balancer_relays_the_client_address nginx
test_expect_success 'no refusal, error or warning at the backends (nginx sends no health checks)' '
	! grep -E "refused|error|malformed|warning|PROXY header" a.err b.err
'
test_balancer_deny nginx
test_balancer_backend_killed_mid_stream nginx

test_done
