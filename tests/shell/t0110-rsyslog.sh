#!/usr/bin/env bash
# rsyslog's omfwd, a log forwarder that streams over TCP and never reads,
# into sockserve --receive-only: every line arrives, in order. rsyslogd
# runs in the foreground with a configuration of its own (no system
# daemon, no /dev/log): an imtcp input that logger feeds, and an omfwd
# action that forwards to sockserve.
. "$(dirname "$0")/lib.sh"

for c in rsyslogd logger python3; do
	command -v $c >/dev/null || skip_all "$c is not installed"
done

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_server srv --receive-only -o lines.log 127.0.0.1:0 || exit 1

IN=$(free_port)
mkdir -p rs
cat >rs.conf <<EOC
global(workDirectory="$TRASH/rs")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="$IN")
*.* action(type="omfwd" target="127.0.0.1" port="${srv_addr##*:}" protocol="tcp")
EOC
rsyslogd -n -f rs.conf -i "$TRASH/rs/rsyslogd.pid" >rs.out 2>&1 &
RS=$!
PIDS+=("$RS")

test_expect_success 'rsyslogd accepts on its own port' '
	for i in $(seq 200); do
		(exec 3<>/dev/tcp/127.0.0.1/$IN) 2>/dev/null && break
		sleep 0.05
	done &&
	(exec 3<>/dev/tcp/127.0.0.1/$IN)
'

test_expect_success 'omfwd streams 20,000 lines into --receive-only: all of them, in order' '
	seq 20000 | bounded logger --tcp -n 127.0.0.1 -P "$IN" -t t &&
	for i in $(seq 600); do
		[ "$(wc -l <lines.log)" -ge 20000 ] && break
		sleep 0.05
	done &&
	sed "s/.* //" lines.log >got &&
	seq 20000 >want &&
	cmp got want
'

test_expect_success 'nothing was sent to rsyslog, and its stop is a clean end of stream' '
	kill -TERM $RS && reap $RS &&
	wait_for srv.err "closed (client EOF): 20000 lines, 0 acks (receive-only)" &&
	! grep -q "partial" srv.err
'

test_expect_success 'SIGTERM: exit status 0' '
	stop_server srv
'

test_done
