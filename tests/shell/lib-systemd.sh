# lib-systemd.sh: a real systemd as PID 1 for the shell tests, isolated the
# way systemd-pid1-example.sh of the project's shared tools does it: its
# own cgroup directory AND cgroup namespace, new pid/mount/uts/ipc
# namespaces, an overlay of / (read-only below, tmpfs above) so nothing
# reaches the host's files, a watchdog that kills the whole subtree after
# a bounded time, and cleanup at exit. The host network is shared, so
# the units' 127.0.0.1 listeners are reachable from the test.
#
# Source it after lib.sh, then
#     sd_boot NAME SECONDS [PORT...]
# skips the whole script when this machine cannot run it (not root, no
# systemd, no cgroup2, a PORT in use), else boots systemd and sets
# LEADER (its PID here), CR (its root, as seen from here), E (runs a
# command inside, bounded) and SC (systemctl inside). SD_SHARED_RUN=1
# before sd_boot makes the container's /run shared: systemd makes
# service credentials (LoadCredential=) appear by mount propagation.

sd_boot() {
	local name=$1 watchdog=$2 p c
	shift 2
	[ "$(id -u)" = 0 ] || skip_all "needs root to start systemd in namespaces"
	[ -x /lib/systemd/systemd ] || skip_all "systemd is not installed"
	for c in unshare nsenter script setpriv; do
		command -v $c >/dev/null || skip_all "$c is not installed"
	done
	for c in /sys/fs/cgroup/unified /sys/fs/cgroup; do
		[ "$(stat -fc %T $c 2>/dev/null)" = cgroup2fs ] && { CG2=$c; break; }
	done
	[ -n "${CG2:-}" ] || skip_all "no cgroup2 mount"
	for p in "$@"; do
		(exec 6<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && skip_all "port $p is in use on this machine"
	done

	W=$TRASH/sd
	CG=$CG2/$name-$$
	local R=$W/root shared=
	[ "${SD_SHARED_RUN:-}" = 1 ] && shared="mount --make-shared \$R/run"
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
$shared
mount -t tmpfs -o mode=1777 sockserve-tmp \$R/tmp
printf '[Unit]\nDescription=sockserve test idle\n' > \$R/etc/systemd/system/sockserve-test-idle.target
export container=sockserve-test
cd \$R
exec setpriv --bounding-set -sys_module,-sys_time,-sys_boot,-sys_rawio chroot . /lib/systemd/systemd --unit=sockserve-test-idle.target --log-target=console --log-level=info --show-status=no
EOI
	chmod +x "$W/inner.sh"
	trap sd_cleanup EXIT

	mkdir "$CG" || skip_all "cannot make a cgroup under $CG2"
	setsid bash -c "echo \$\$ > $CG/cgroup.procs && exec script -qfec 'unshare --pid --fork --mount --cgroup --uts --ipc --propagation private $W/inner.sh' $W/manager.log" </dev/null >/dev/null 2>&1 &
	MPID=$!
	setsid bash -c "echo \$\$ > $CG/cgroup.procs; sleep $watchdog; echo 1 > $CG/cgroup.kill" </dev/null >/dev/null 2>&1 &
	disown -a
	local i s
	for i in $(seq 50); do
		for p in $(find "$CG" -name cgroup.procs -exec cat {} +); do
			[ "$(cat /proc/$p/comm 2>/dev/null)" = systemd ] && [ "$(awk '/^NSpid/{print $NF}' /proc/$p/status)" = 1 ] && LEADER=$p
		done
		[ -n "${LEADER:-}" ] && break
		sleep 0.1
	done
	[ -n "${LEADER:-}" ] || { sed 's/^/# /' "$W/manager.log"; skip_all "systemd did not start here"; }
	for i in $(seq 100); do
		s=$(SC is-system-running 2>/dev/null)
		case $s in running | degraded) break ;; esac
		sleep 0.1
	done
	say "systemd is $s"
	CR=/proc/$LEADER/root
}

E() { timeout 20 nsenter -t "$LEADER" -m -p -u -i -C -r -w "$@"; }
SC() { E systemctl --no-pager "$@"; }

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
