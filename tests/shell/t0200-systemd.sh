#!/usr/bin/env bash
# The shipped units in systemd/ under a real systemd as PID 1, isolated
# the way systemd-pid1-example.sh of the project's shared tools does it: its own cgroup
# directory AND cgroup namespace, new pid/mount/uts/ipc namespaces, an
# overlay of / (read-only below, tmpfs above) so nothing reaches the
# host's files, a watchdog that kills the whole subtree after 120 s, and
# cleanup at exit. The host network is shared, so the units' 127.0.0.1
# listeners are reachable from here.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root to start systemd in namespaces"
[ -x /lib/systemd/systemd ] || skip_all "systemd is not installed"
for c in unshare nsenter script setpriv; do
	command -v $c >/dev/null || skip_all "$c is not installed"
done
for c in /sys/fs/cgroup/unified /sys/fs/cgroup; do
	[ "$(stat -fc %T $c 2>/dev/null)" = cgroup2fs ] && { CG2=$c; break; }
done
[ -n "${CG2:-}" ] || skip_all "no cgroup2 mount"
# The shipped units listen on 10008 and 10009.
for p in 10008 10009; do
	(exec 6<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && skip_all "port $p is in use on this machine"
done

W=$TRASH/sd
ID=sockserve-test-$$
CG=$CG2/$ID
R=$W/root
mkdir -p "$R" "$W/ovl"
cat >"$W/inner.sh" <<EOI
#!/bin/bash
set -e
R=$R; O=$W/ovl
mount -t tmpfs -o mode=755 sockserve-ovl \$O; mkdir \$O/up \$O/work
mount -t overlay sockserve-root -o lowerdir=/,upperdir=\$O/up,workdir=\$O/work \$R
mount -t proc proc \$R/proc
mount --bind \$R/proc/sys \$R/proc/sys; mount -o remount,bind,ro \$R/proc/sys
mount -t sysfs -o ro sysfs \$R/sys
mount -t cgroup2 none \$R/sys/fs/cgroup
mount -t tmpfs -o mode=755 sockserve-dev \$R/dev
for d in null zero full random urandom tty; do touch \$R/dev/\$d; mount --bind /dev/\$d \$R/dev/\$d; done
mkdir \$R/dev/pts \$R/dev/shm; mount -t devpts -o newinstance,ptmxmode=0666 devpts \$R/dev/pts; ln -s pts/ptmx \$R/dev/ptmx
touch \$R/dev/console; mount --bind "\$(tty)" \$R/dev/console
mount -t tmpfs -o mode=755 sockserve-run \$R/run
mount -t tmpfs -o mode=1777 sockserve-tmp \$R/tmp
printf '[Unit]\nDescription=sockserve test idle\n' > \$R/etc/systemd/system/sockserve-test-idle.target
export container=sockserve-test
cd \$R
exec setpriv --bounding-set -sys_module,-sys_time,-sys_boot,-sys_rawio chroot . /lib/systemd/systemd --unit=sockserve-test-idle.target --log-target=console --log-level=info --show-status=no
EOI
chmod +x "$W/inner.sh"

sd_cleanup() {
	set +e
	[ -n "${LEADER:-}" ] && kill -0 "$LEADER" 2>/dev/null && {
		kill -RTMIN+3 "$LEADER"
		for i in $(seq 40); do case $(awk '{print $3}' /proc/$MPID/stat 2>/dev/null) in Z | "") break ;; esac; sleep 0.1; done
	}
	[ -d "$CG" ] && { echo 1 >"$CG/cgroup.kill" 2>/dev/null; sleep 0.3; find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null; }
	[ -d "$CG" ] && echo "# WARN: $CG left"
	mount | grep -q "$W" && echo "# WARN: mounts left"
	cleanup
}
trap sd_cleanup EXIT

mkdir "$CG" || skip_all "cannot make a cgroup under $CG2"
setsid bash -c "echo \$\$ > $CG/cgroup.procs && exec script -qfec 'unshare --pid --fork --mount --cgroup --uts --ipc --propagation private $W/inner.sh' $W/manager.log" </dev/null >/dev/null 2>&1 &
MPID=$!
setsid bash -c "echo \$\$ > $CG/cgroup.procs; sleep 120; echo 1 > $CG/cgroup.kill" </dev/null >/dev/null 2>&1 &
disown -a
for i in $(seq 50); do
	for p in $(find "$CG" -name cgroup.procs -exec cat {} +); do
		[ "$(cat /proc/$p/comm 2>/dev/null)" = systemd ] && [ "$(awk '/^NSpid/{print $NF}' /proc/$p/status)" = 1 ] && LEADER=$p
	done
	[ -n "${LEADER:-}" ] && break
	sleep 0.1
done
[ -n "${LEADER:-}" ] || { sed 's/^/# /' "$W/manager.log"; skip_all "systemd did not start here"; }
E() { timeout 20 nsenter -t "$LEADER" -m -p -u -i -C -r -w "$@"; }
SC() { E systemctl --no-pager "$@"; }
for i in $(seq 100); do
	s=$(SC is-system-running 2>/dev/null)
	case $s in running | degraded) break ;; esac
	sleep 0.1
done
say "systemd is $s"
CR=/proc/$LEADER/root

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
