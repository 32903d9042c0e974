#!/usr/bin/env bash
# Received lines in the journal, under a real systemd and journald: each
# line one entry over the native protocol, stored byte for byte at
# priority 6 whatever it says, none lost to a rate limit, queryable by
# peer. The shipped units are installed as they are, with drop-ins that
# only move their listeners to 24008/24009, so this test never collides
# with t0200-systemd.sh (10008/10009).
#
# systemd runs isolated the way systemd-pid1-example.sh of the project's
# shared tools does it, as in t0200-systemd.sh: its own cgroup directory
# AND cgroup namespace, new pid/mount/uts/ipc namespaces, an overlay of /
# (read-only below, tmpfs above) so nothing reaches the host's files, a
# watchdog that kills the whole subtree after 90 s, and cleanup at exit.
# The host network is shared, so the units' 127.0.0.1 listeners are
# reachable from here.
. "$(dirname "$0")/lib.sh"

. "$ROOT/tests/shell/lib-systemd.sh"
command -v jq >/dev/null || skip_all "jq is not installed"
sd_boot sockserve-journal-test 90 24008 24009 24010

# Install as shipped; drop-ins move only the TCP listeners.
cp "$BIN/sockserve" "$BIN/sockclient" "$CR/usr/bin/"
cp "$ROOT"/systemd/* "$CR/etc/systemd/system/"
U=$CR/etc/systemd/system
mkdir -p "$U/sockserve.socket.d" "$U/sockserve-accept.socket.d"
printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:24008\nListenStream=/run/sockserve/sockserve.sock\n' >"$U/sockserve.socket.d/ports.conf"
printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:24009\n' >"$U/sockserve-accept.socket.d/ports.conf"

# J ARGS...: journalctl in the container, every field whole, as JSON.
J() { E journalctl --no-pager --all -o json "$@"; }
# entries N ARGS...: waits (bounded) until journalctl ARGS shows at least
# N entries; leaves them in the file "entries".
entries() {
	local n=$1 i
	shift
	for i in $(seq 100); do
		J "$@" >entries 2>journal.err
		[ "$(wc -l <entries)" -ge "$n" ] && return 0
		sleep 0.1
	done
	echo "only $(wc -l <entries) entries of $n for journalctl $*:"
	head -c 2000 entries journal.err
	return 1
}

# journald with a global rate limit far below the burst below (scaled up
# by free space, it still keeps only a few thousand lines in 30 s): the
# shipped units' LogRateLimitIntervalSec=0 must keep every line anyway.
mkdir -p "$CR/etc/systemd/journald.conf.d"
printf '[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst=100\n' >"$CR/etc/systemd/journald.conf.d/sockserve-test.conf"

test_expect_success 'the units start on their moved ports' '
	SC restart systemd-journald.service &&
	SC daemon-reload &&
	SC start sockserve.socket sockserve-accept.socket &&
	test "$(SC is-active sockserve.socket)" = active &&
	test "$(SC show -p LogRateLimitBurst --value sockserve.service)" = 10000000 &&
	seq 3 | bounded sockclient -q 127.0.0.1:24008 &&
	test "$(SC show -p ActiveState --value sockserve.service)" = active
'
PID=$(SC show -p MainPID --value sockserve.service)

test_expect_success 'a line <0>emergency? is stored verbatim at priority 6' '
	printf "<0>emergency?\n" | bounded sockclient -q 127.0.0.1:24008 &&
	entries 1 -u sockserve.service "MESSAGE=<0>emergency?" &&
	test "$(wc -l <entries)" = 1 &&
	jq -e ".MESSAGE == \"<0>emergency?\" and .PRIORITY == \"6\" and .SYSLOG_IDENTIFIER == \"sockserve\"" entries &&
	E journalctl --no-pager -q -p 0..5 -u sockserve.service >urgent &&
	test ! -s urgent
'

test_expect_success '20,000 lines in one burst are all in the journal, in order, past journald'"'"'s low global rate limit' '
	seq 20000 | sed "s/^/burst /" >burst &&
	bounded sockclient -q 127.0.0.1:24008 <burst &&
	entries 1 -u sockserve.service "MESSAGE=burst 1" &&
	conn=$(jq -r .SOCKSERVE_CONNECTION entries) &&
	entries 20000 -u sockserve.service _PID=$PID SOCKSERVE_CONNECTION=$conn &&
	jq -r .MESSAGE entries >got &&
	cmp got burst &&
	jq -r .SOCKSERVE_LINE entries >numbers &&
	seq 20000 | cmp - numbers
'

test_expect_success 'a 60 KiB line comes back as one entry, byte for byte' '
	head -c 48000 /dev/urandom | base64 -w0 | head -c 61440 >big &&
	test "$(wc -c <big)" = 61440 &&
	{ cat big; echo; } | bounded sockclient -q 127.0.0.1:24008 &&
	entries 1 -u sockserve.service "MESSAGE=$(cat big)" &&
	test "$(wc -l <entries)" = 1 &&
	jq -j .MESSAGE entries | cmp - big
'

test_expect_success 'a line with a NUL byte comes back as one entry, byte for byte' '
	printf "nul-probe\nnul\0byte <1>\ttab\r\n" | bounded sockclient -q 127.0.0.1:24008 &&
	entries 1 -u sockserve.service MESSAGE=nul-probe &&
	conn=$(jq -r .SOCKSERVE_CONNECTION entries) &&
	entries 1 -u sockserve.service _PID=$PID SOCKSERVE_CONNECTION=$conn SOCKSERVE_LINE=2 &&
	test "$(wc -l <entries)" = 1 &&
	printf "nul\0byte <1>\ttab" | od -An -tu1 -v | tr -s " \n" "," | sed "s/^,//; s/,\$//; s/.*/[&]/" >want && echo >>want &&
	jq -c .MESSAGE entries | cmp - want
'

test_expect_success 'journalctl SOCKSERVE_PEER=... finds a client'"'"'s lines' '
	printf "peer-probe %s\n" a b c | bounded sockclient -q 127.0.0.1:24008 &&
	entries 1 -u sockserve.service "MESSAGE=peer-probe a" &&
	peer=$(jq -r .SOCKSERVE_PEER entries) &&
	echo "$peer" | grep -Eq "^127\.0\.0\.1:[0-9]+$" &&
	entries 3 "SOCKSERVE_PEER=$peer" &&
	jq -r .MESSAGE entries >got &&
	printf "peer-probe %s\n" a b c | cmp - got
'

test_expect_success 'Accept=yes: one process per connection, its lines entries too' '
	printf "per-connection\n" | bounded sockclient -q 127.0.0.1:24009 &&
	entries 1 -u "sockserve-accept@*" "MESSAGE=per-connection" &&
	jq -e ".SYSLOG_IDENTIFIER == \"sockserve\" and .PRIORITY == \"6\" and .SOCKSERVE_LINE == \"1\"" entries
'

# The shipped service, sandbox and all, as sockserve-big with a larger
# --max-line on 24010: a 9 MiB line is more than one datagram can carry
# (the socket's send buffer is at most 8 MiB), so its entry goes by memfd.
sed -e 's/sockserve\.socket/sockserve-big.socket/' \
	-e 's|^ExecStart=.*|ExecStart=/usr/bin/sockserve --max-line 16777216|' \
	"$ROOT/systemd/sockserve.service" >"$U/sockserve-big.service"
printf '[Socket]\nListenStream=127.0.0.1:24010\n' >"$U/sockserve-big.socket"

test_expect_success 'an entry too large for a datagram goes by memfd (9 MiB line, shipped sandbox)' '
	SC daemon-reload && SC start sockserve-big.socket &&
	head -c 7200000 /dev/urandom | base64 -w0 | head -c 9437184 >huge &&
	{ cat huge; echo; } | bounded sockclient -q 127.0.0.1:24010 &&
	entries 1 -u sockserve-big.service SOCKSERVE_LINE=1 &&
	test "$(wc -l <entries)" = 1 &&
	jq -j .MESSAGE entries | cmp - huge
'

test_expect_success 'journald and its sockets restarted: sockserve connects again, same process' '
	SC stop systemd-journald.socket systemd-journald-dev-log.socket systemd-journald-audit.socket systemd-journald.service &&
	SC start systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service &&
	printf "after restart\n" | bounded sockclient -q 127.0.0.1:24008 &&
	entries 1 -u sockserve.service "MESSAGE=after restart" &&
	test "$(SC show -p MainPID --value sockserve.service)" = "$PID"
'

test_expect_success 'journald gone: no ack for a line it did not take; the service exits 1' '
	SC stop systemd-journald.socket systemd-journald-dev-log.socket systemd-journald-audit.socket systemd-journald.service &&
	test "$(SC is-active systemd-journald.service)" = inactive &&
	printf "into the void\n" | bounded sockclient --ack-timeout 10s 127.0.0.1:24008 >acks 2>err;
	test ! -s acks &&
	grep -q "1 of 1 sent lines were not acknowledged" err &&
	# From the manager'"'"'s log, not ExecMainStatus: Restart=on-failure
	# starts the service again after 100 ms, and the new process resets
	# that property (a busy machine missed the window once).
	for i in $(seq 100); do
		grep -q "sockserve.service: Main process exited, code=exited, status=1/FAILURE" "$W/manager.log" && break
		sleep 0.1
	done &&
	grep -q "sockserve.service: Main process exited, code=exited, status=1/FAILURE" "$W/manager.log" &&
	grep -q "sockserve.service: Failed with result .exit-code." "$W/manager.log"
'

if [ "$test_failed" -gt 0 ]; then
	say "journal of the manager and the units, for the failures above:"
	grep -v "^$" "$W/manager.log" | tail -40 | sed "s/^/#   /"
	E journalctl --no-pager -o short-monotonic -n 30 2>&1 | cut -c1-300 | sed "s/^/#   /"
fi
test_done
