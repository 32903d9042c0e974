#!/usr/bin/env bash
# Compatibility with the tutorial's own programs, run unchanged from
# tests/tutorial (port 10008, as they hard-code it).
#
# server.php binds without SO_REUSEADDR, so it cannot bind while a
# connection that a server closed first lingers in TIME_WAIT on port
# 10008: its test runs first, and clients close first elsewhere.
. "$(dirname "$0")/lib.sh"

SEED=${SEED:-$ROOT/tests/tutorial}
[ -f "$SEED/client.php" ] && [ -f "$SEED/server.php" ] ||
	skip_all "tutorial programs not found in $SEED"
command -v php >/dev/null || skip_all "php not installed (Debian package php-cli): tutorial compatibility NOT tested"

# start_php_server: starts server.php, retrying (at most 70 s) while its
# bind fails because of a TIME_WAIT on 10008 left by an earlier run.
start_php_server() {
	local try i
	for ((try = 0; try < 70; try++)); do
		php "$SEED/server.php" >php-server.out 2>&1 &
		php_pid=$!
		PIDS+=("$php_pid")
		for ((i = 0; i < 250; i++)); do
			grep -q "Address already in use" php-server.out && break
			(exec 6<>/dev/tcp/127.0.0.1/10008) 2>/dev/null && return 0
			sleep 0.02
		done
		kill -9 "$php_pid" 2>/dev/null
		reap "$php_pid" 2>/dev/null
		[ "$try" = 0 ] && say "port 10008 lingers in TIME_WAIT; retrying server.php for up to 70 s"
		sleep 1
	done
	return 1
}

test_expect_success 'sockclient against server.php: one ack per line, exit 0' '
	start_php_server &&
	wait_for php-server.out "Closed the socket" &&
	printf "one\ntwo\nthree\n" | bounded sockclient 127.0.0.1 10008 >acks &&
	test "$(cat acks)" = "Information Received
Information Received
Information Received" &&
	wait_for php-server.out "Buffer: three" &&
	kill $php_pid && { reap $php_pid 2>/dev/null; true; }
'

test_expect_success 'client.php against sockserve: greeting and an ack' '
	start_server srv --idle-timeout 1 &&
	test "$srv_addr" = 127.0.0.1:10008 &&
	bounded php "$SEED/client.php" >php.out &&
	grep -qx "Buffer Data: connect" php.out &&
	grep -qx " response from server was:Information Received" php.out &&
	test "$(cat srv.out)" = "SOME DATA" &&
	stop_server srv
'

test_expect_success 'client.php recognises the refusal of a busy sockserve' '
	start_server busy --max-connections 1 &&
	exec 7<>/dev/tcp/127.0.0.1/10008 &&
	read -r -t 10 greeting <&7 &&
	bounded php "$SEED/client.php" >php.out &&
	grep -qx "don.t connect" php.out &&
	exec 7>&- &&
	stop_server busy
'

test_done
