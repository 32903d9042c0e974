#!/usr/bin/env bash
# sockserve behind HAProxy, with examples/haproxy/haproxy.cfg as shipped
# but for its ports: PROXY v2 from 127.0.0.9, health checks with LOCAL
# headers, half-close passed through. See lib-balancer.sh for the checks.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/shell/lib-balancer.sh"

if ! command -v haproxy >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1
fi
command -v haproxy >/dev/null ||
	skip_all "haproxy not installed (Debian package haproxy; scripts/test installs it as root): HAProxy NOT tested"

FRONT_PORT=25008 PORT_A=25011 PORT_B=25012 READY_PORT=25013
FRONT=127.0.0.1:$FRONT_PORT
free_port_or_skip $FRONT_PORT $PORT_A $PORT_B $READY_PORT

sed -e "s/127\.0\.0\.1:10008/127.0.0.1:$FRONT_PORT/" \
	-e "s/127\.0\.0\.1:10011/127.0.0.1:$PORT_A/" \
	-e "s/127\.0\.0\.1:10012/127.0.0.1:$PORT_B/" \
	"$ROOT/examples/haproxy/haproxy.cfg" >haproxy.cfg
# A listener of the test's own, bound with the frontend, to wait on: a
# probe of the frontend itself makes HAProxy open a backend connection
# that it resets when the probe leaves, and a backend logs that reset.
cat >>haproxy.cfg <<EOC

listen ready
    bind 127.0.0.1:$READY_PORT
    mode tcp
    tcp-request connection reject
EOC

test_expect_success 'the shipped configuration is valid' '
	haproxy -c -q -f haproxy.cfg &&
	grep -q "send-proxy-v2 check check-send-proxy" haproxy.cfg
'

test_expect_success 'the README shows the shipped configuration' '
	strip() { sed -e "s/#.*//" -e "s/[[:space:]]\+/ /g" -e "s/^ //" -e "s/ $//" | grep .; } &&
	awk "\$0 == \"\`\`\`haproxy\" {f = 1; next} /^\`\`\`/ {f = 0} f" "$ROOT/README.md" | strip >readme.cfg &&
	test "$(wc -l <readme.cfg)" -gt 10 &&
	strip <"$ROOT/examples/haproxy/haproxy.cfg" >shipped.cfg &&
	! while read -r line; do grep -qxF -- "$line" shipped.cfg || echo "not shipped: $line"; done <readme.cfg | grep .
'

start_backends || exit 1
haproxy -db -f haproxy.cfg >haproxy.log 2>&1 &
PIDS+=($!)
wait_port $READY_PORT || { cat haproxy.log; exit 1; }

test_balancer_relays_the_client_address haproxy
test_balancer_health_checks_are_quiet haproxy
test_expect_success 'HAProxy saw both backends pass their checks' '
	! grep -E "is DOWN|ALERT" haproxy.log
'
test_balancer_deny haproxy
test_balancer_backend_killed_mid_stream haproxy

test_done
