# lib-balancer.sh: the checks t0500-haproxy.sh and t0510-nginx.sh share,
# in the spirit of git's t/lib-*.sh. Source it after lib.sh, set FRONT (the
# balancer's address), PORT_A and PORT_B (the backends' ports), start the
# backends with start_backends and the balancer with the test's own
# command, then call the test_balancer_* functions.
#
# The balancer connects to the backends from 127.0.0.9; the client runs on
# 127.0.0.1, so a backend that logs or prefixes 127.0.0.9 has not read the
# PROXY header.

# free_port_or_skip PORT...: skip the whole script if one is in use.
free_port_or_skip() {
	local p
	for p in "$@"; do
		(exec 6<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && skip_all "port $p is in use on this machine"
	done
	return 0
}

# start_backends ARGS...: two sockserve behind the balancer (names a and
# b, outputs a.out and b.out), trusting 127.0.0.9, with ARGS added.
start_backends() {
	start_server a -v --proxy-protocol 127.0.0.9 --prefix-peer "$@" "127.0.0.1:$PORT_A" &&
	start_server b -v --proxy-protocol 127.0.0.9 --prefix-peer "$@" "127.0.0.1:$PORT_B"
}

stop_backends() {
	stop_server a
	stop_server b
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (20 s).
wait_port() {
	local i
	for ((i = 0; i < 1000; i++)); do
		(exec 6<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
		sleep 0.02
	done
	echo "nothing accepts on 127.0.0.1:$1" >&2
	return 1
}

# lines_of FILE...: the received lines without their PEER<TAB> prefix.
lines_of() { cat "$@" | cut -f2-; }

# union_has_each N: a.out and b.out together hold 1..N, each once or
# more (ONCE=1: exactly once), and nothing else.
union_has_each() {
	lines_of a.out b.out | sort -n >union &&
	if [ "${ONCE:-0}" = 1 ]; then seq "$1" >want; else sort -nu union >u && mv u union && seq "$1" >want; fi &&
	cmp want union
}

test_balancer_relays_the_client_address() {
	test_expect_success "a client on 127.0.0.1 reaches both backends, logged and prefixed as 127.0.0.1 ($1)" '
		for i in 0 1 2 3 4 5 6 7 8 9; do
			seq $((i * 100 + 1)) $((i * 100 + 100)) | bounded sockclient -q "$FRONT" || return 1
		done &&
		wait_for a.err "closed (client EOF): 100 lines" &&
		wait_for b.err "closed (client EOF): 100 lines" &&
		test "$(grep -c "^127\.0\.0\.1:[0-9]*	" a.out)" -gt 0 &&
		test "$(grep -c "^127\.0\.0\.1:[0-9]*	" b.out)" -gt 0 &&
		! grep -v "^127\.0\.0\.1:[0-9]*	" a.out b.out &&
		grep -q "sockserve: 127\.0\.0\.1:[0-9]*: connected through 127\.0\.0\.9:" a.err &&
		grep -q "sockserve: 127\.0\.0\.1:[0-9]*: closed (client EOF): 100 lines, 100 acks" b.err &&
		! grep "127\.0\.0\.9:[0-9]*: closed (client EOF): 100 lines" a.err b.err
	'
	test_expect_success "both outputs together hold every line exactly once ($1)" '
		ONCE=1 union_has_each 1000
	'
}

test_balancer_health_checks_are_quiet() {
	test_expect_success "health checks leave no error lines ($1)" '
		wait_for a.err "PROXY LOCAL or UNKNOWN" &&
		wait_for b.err "PROXY LOCAL or UNKNOWN" &&
		grep -q "closed (health check done)" a.err &&
		! grep -E "refused|error|malformed|warning|PROXY header" a.err b.err
	'
}

# test_balancer_deny TITLE: backends restarted with --deny 127.0.0.1
# refuse the client through the balancer; then restarted without.
test_balancer_deny() {
	test_expect_success "--deny of the client address refuses it through the balancer ($1)" '
		stop_backends &&
		start_backends --deny 127.0.0.1 &&
		{ echo x | bounded sockclient "$FRONT" 2>err; test $? -eq 3; } &&
		grep -q "not connect: not allowed" err &&
		{ grep -q "sockserve: 127\.0\.0\.1:[0-9]*: refused: not allowed" a.err ||
			grep -q "sockserve: 127\.0\.0\.1:[0-9]*: refused: not allowed" b.err; } &&
		! lines_of a.out b.out | grep -qx x &&
		stop_backends &&
		start_backends
	'
}

test_balancer_backend_killed_mid_stream() {
	if ! sockclient --help | grep -q -- --window; then
		test_skip "a backend killed mid-stream: sockclient --retry resends what was not acked ($1)" \
			"sockclient has no --window yet: reconnect-and-resend is being built on branch client"
		return
	fi
	test_expect_success "a backend killed mid-stream: sockclient --retry exits 0, every line in the union ($1)" '
		stop_backends &&
		start_backends &&
		N=200000 &&
		{ seq $N | bounded sockclient -q --retry 5 "$FRONT" 2>client.err & cpid=$!; } &&
		victim= &&
		for ((i = 0; i < 1000; i++)); do
			if [ "$(wc -l <a.out)" -gt 1000 ]; then victim=a; break; fi
			if [ "$(wc -l <b.out)" -gt 1000 ]; then victim=b; break; fi
			sleep 0.02
		done &&
		{ test -n "$victim" || { echo "no backend got 1000 lines" >&2; false; }; } &&
		vp=${victim}_pid && kill -9 "${!vp}" &&
		{ wait "$cpid" || { echo "sockclient failed:" >&2; cat client.err >&2; false; }; } &&
		other=a && { [ $victim = b ] || other=b; } &&
		echo "killed $victim at $(wc -l <$victim.out) lines; $other has $(wc -l <$other.out)" &&
		test "$(lines_of $victim.out | sort -nu | wc -l)" -lt $N &&
		test -s $other.out &&
		union_has_each $N
	'
}
