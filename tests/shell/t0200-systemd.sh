#!/usr/bin/env bash
# The shipped units in systemd/ under a real systemd as PID 1, isolated
# the way systemd-pid1-example.sh of the project's shared tools does it: its own cgroup
# directory AND cgroup namespace, new pid/mount/uts/ipc namespaces, an
# overlay of / (read-only below, tmpfs above) so nothing reaches the
# host's files, a watchdog that kills the whole subtree after 120 s, and
# cleanup at exit. The host network is shared, so the units' 127.0.0.1
# listeners are reachable from here.
. "$(dirname "$0")/lib.sh"

. "$ROOT/tests/shell/lib-systemd.sh"
# The shipped units listen on 10008 and 10009.
sd_boot sockserve-test 120 10008 10009

# Install as shipped: the binaries where the units expect them, the units
# unchanged.
cp "$BIN/sockserve" "$BIN/sockclient" "$CR/usr/bin/"
cp "$ROOT"/systemd/* "$CR/etc/systemd/system/"
mkdir -p "$CR/usr/share/man/man1"
cp "$ROOT"/man/*.1 "$CR/usr/share/man/man1/"

test_expect_success 'systemd-analyze verify is clean on every unit' '
	E systemd-analyze verify /etc/systemd/system/sockserve.socket /etc/systemd/system/sockserve.service \
		/etc/systemd/system/sockserve-accept.socket /etc/systemd/system/sockserve-accept@.service >verify 2>&1;
	cat verify && test ! -s verify
'

test_expect_success 'the sockets listen; the service waits for a connection' '
	SC daemon-reload &&
	SC start sockserve.socket sockserve-accept.socket &&
	test "$(SC is-active sockserve.socket)" = active &&
	test "$(SC is-active sockserve.service)" = inactive &&
	test -S "$CR/run/sockserve/sockserve.sock"
'

test_expect_success 'first TCP connection starts it; it reports READY' '
	seq 3 | bounded sockclient 127.0.0.1:10008 >acks &&
	test "$(wc -l <acks)" -eq 3 &&
	test "$(SC show -p ActiveState --value sockserve.service)" = active &&
	SC show -p StatusText --value sockserve.service >status &&
	grep -q "connections open" status
'

test_expect_success 'the Unix socket is served by the same process' '
	pid=$(SC show -p MainPID --value sockserve.service) &&
	printf "over unix\n" | bounded sockclient "unix:$CR/run/sockserve/sockserve.sock" >acks &&
	test "$(cat acks)" = "Information Received" &&
	test "$(SC show -p MainPID --value sockserve.service)" = "$pid"
'

test_expect_success 'received lines reach the journal' '
	for i in $(seq 100); do
		E journalctl -u sockserve.service -o cat --no-pager >journal 2>&1
		grep -qx "over unix" journal && break
		sleep 0.1
	done &&
	grep -qx 3 journal && grep -qx "over unix" journal
'

test_expect_success 'the service is sandboxed as shipped' '
	pid=$(SC show -p MainPID --value sockserve.service) &&
	SC show -p NRestarts,Result sockserve.service >props &&
	grep -qx "Result=success" props &&
	E ls /proc/$pid/ns/net >/dev/null &&
	test "$(E readlink /proc/$pid/ns/net)" != "$(E readlink /proc/1/ns/net)" &&
	test "$(E stat -c %u /proc/$pid)" != 0
'

test_expect_success 'stopping the service leaves the sockets; the next connection starts it again' '
	SC stop sockserve.service &&
	test "$(SC is-active sockserve.service)" = inactive &&
	test "$(SC is-active sockserve.socket)" = active &&
	test -S "$CR/run/sockserve/sockserve.sock" &&
	echo again | bounded sockclient "unix:$CR/run/sockserve/sockserve.sock" >acks &&
	test "$(cat acks)" = "Information Received" &&
	test "$(SC is-active sockserve.service)" = active
'

test_expect_success 'Accept=yes: one instance per connection, lines in the journal' '
	echo per-connection | bounded sockclient 127.0.0.1:10009 >acks &&
	test "$(cat acks)" = "Information Received" &&
	for i in $(seq 100); do
		E journalctl -u "sockserve-accept@*" -o cat --no-pager >journal 2>&1
		grep -qx per-connection journal && break
		sleep 0.1
	done &&
	grep -qx per-connection journal
'

# readme_block INFO: the fenced block of the README whose info string is INFO.
readme_block() { awk -v t="$1" '$0 == "```" t {f = 1; next} /^```/ {f = 0} f' "$ROOT/README.md"; }

test_expect_success 'README: lines to a file with the drop-in, rotated by its logrotate stanza' '
	command -v logrotate >/dev/null || { echo "logrotate not installed"; false; } &&
	mkdir -p "$CR/etc/systemd/system/sockserve.service.d" &&
	readme_block systemd >"$CR/etc/systemd/system/sockserve.service.d/override.conf" &&
	grep -q -- "--output /var/lib/sockserve/lines.log" "$CR/etc/systemd/system/sockserve.service.d/override.conf" &&
	SC daemon-reload && SC stop sockserve.service &&
	seq 5 | bounded sockclient -q 127.0.0.1:10008 &&
	test "$(E cat /var/lib/sockserve/lines.log)" = "$(seq 5)" &&
	readme_block logrotate >"$CR/etc/logrotate.d/sockserve" &&
	E logrotate -f /etc/logrotate.d/sockserve &&
	for i in $(seq 200); do E test -f /var/lib/sockserve/lines.log && break; sleep 0.05; done &&
	seq 6 8 | bounded sockclient -q 127.0.0.1:10008 &&
	test "$(E cat /var/lib/sockserve/lines.log.1)" = "$(seq 5)" &&
	test "$(E cat /var/lib/sockserve/lines.log)" = "$(seq 6 8)" &&
	test "$(E stat -c %a /var/lib/sockserve/lines.log)" = 600 &&
	pid=$(SC show -p MainPID --value sockserve.service) &&
	test "$(E stat -c %u /var/lib/sockserve/lines.log)" = "$(E stat -c %u /proc/$pid)" &&
	E journalctl -u sockserve.service -o cat --no-pager >journal 2>&1 &&
	grep "reopened output /var/lib/sockserve/lines.log" journal &&
	! grep -E "cannot (re)?open|cannot use output|not private" journal
'

test_expect_success 'the service runs under its limits: no core, bounded memory and tasks' '
	pid=$(SC show -p MainPID --value sockserve.service) &&
	E grep -E "^Max (core file size|open files)" /proc/$pid/limits >limits &&
	cat limits &&
	grep -Eq "^Max core file size +0 +0 " limits &&
	grep -Eq "^Max open files +([0-9]+) +\1 " limits &&
	SC show -p MemoryMax,TasksMax,UMask sockserve.service >props &&
	cat props &&
	grep -qx "MemoryMax=536870912" props &&
	grep -qx "TasksMax=256" props &&
	grep -qx "UMask=0077" props &&
	echo still | bounded sockclient -q 127.0.0.1:10008
'

test_expect_success 'systemd-analyze security rates the services' '
	rated=0 &&
	for u in sockserve.service sockserve-accept@x.service; do
		E systemd-analyze security --no-pager $u >security-$u 2>&1;
		tail -1 security-$u | sed "s/^/# /";
		grep -Eq "Overall exposure level for $u: 0\.[0-5] SAFE" security-$u && rated=$((rated + 1))
	done &&
	test $rated = 2
'
for f in security-*; do say "$(tail -1 "$f" 2>/dev/null)"; done

if [ "$test_failed" -gt 0 ]; then
	say "journal of the manager and the units, for the failures above:"
	grep -v "^$" "$W/manager.log" | tail -80 | sed "s/^/#   /"
	E journalctl --no-pager -o short-monotonic -n 30 2>&1 | sed "s/^/#   /"
fi
test_done
