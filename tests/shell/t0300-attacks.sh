#!/usr/bin/env bash
# Attacks by another local user (nobody, through setpriv) on sockserve run
# as root with its output and socket in a directory that user can write,
# as in issue 19: links and FIFOs planted at the output path before start
# and before SIGHUP, files the attacker owns or hard-linked, a chmod by
# name after bind(2), a link at a stale socket's path. Each test checks
# that nothing outside the intended file changed (the victims' directory
# is compared before and after) and, where a server runs, that it kept
# serving and acking.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root to run sockserve as root and the attacks as nobody"
for c in setpriv strace; do
	command -v $c >/dev/null || skip_all "$c is not installed"
done
setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null ||
	skip_all "setpriv cannot switch to uid 65534 here"

# The attacker: uid and gid 65534, no supplementary groups.
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

# $TRASH must be traversable for nobody; $D is the directory nobody can
# write (as /var/log is for group syslog on Ubuntu, or a service's
# directory); $V holds root's files that must never change.
chmod 0755 "$TRASH"
D=$TRASH/shared V=$TRASH/victims
mkdir "$D" "$V" && chown 65534:65534 "$D" && chmod 0755 "$D"
printf 'root:secret\n' >"$V/shadow" && chmod 0600 "$V/shadow"
printf 'shared\n' >"$V/shared" && chmod 0666 "$V/shared"
python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$V/stale.sock"

# snapshot FILE: every entry of $V with its type, size, mode, owner,
# inode and content hash.
snapshot() {
	(cd "$V" && find . -printf '%p %y %s %m %U %i\n' | sort &&
		find . -type f -exec sha1sum {} + | sort) >"$1"
}
snapshot "$TRASH/victims.before"
unchanged() { snapshot "$TRASH/victims.now" && cmp "$TRASH/victims.before" "$TRASH/victims.now"; }

# acked ADDR LINE: sends LINE with sockclient, expects its one ack.
acked() { test "$(printf '%s\n' "$2" | bounded sockclient "$1")" = "Information Received"; }

# refused NAME ARGS...: sockserve ARGS must refuse to start (exit 1)
# without listening; its stderr in NAME.err.
refused() {
	local name=$1
	shift
	timeout 20 sockserve "$@" >"$name.out" 2>"$name.err"
	local st=$?
	cat "$name.err"
	test $st -eq 1 && ! grep -q "listening on" "$name.err"
}

reset_dir() { rm -rf "${D:?}"/* && test -z "$(ls -A "$D")"; }

test_expect_success 'a symlink planted at the output before start is refused' '
	reset_dir &&
	nobody ln -s "$V/shadow" "$D/lines.log" &&
	refused start-link -o "$D/lines.log" 127.0.0.1:0 &&
	grep -q "cannot use output $D/lines.log: it is a symbolic link; give the real path" start-link.err &&
	unchanged
'

test_expect_success 'a file the attacker made (0666) is refused' '
	reset_dir &&
	nobody sh -c "umask 0; : >\"$D/lines.log\"" &&
	refused start-owned -o "$D/lines.log" 127.0.0.1:0 &&
	grep -q "it is a regular file owned by uid 65534, neither this user (uid 0) nor root" start-owned.err &&
	test ! -s "$D/lines.log" &&
	unchanged
'

test_expect_success 'a hard link to another file is refused' '
	reset_dir &&
	nobody ln "$V/shared" "$D/lines.log" &&
	refused start-hard -o "$D/lines.log" 127.0.0.1:0 &&
	grep -q "it has 2 hard links" start-hard.err &&
	unchanged
'

test_expect_success 'a FIFO planted before start without a reader: a clear error, no hang' '
	reset_dir &&
	nobody mkfifo -m 0666 "$D/lines.log" &&
	refused start-fifo -o "$D/lines.log" 127.0.0.1:0 &&
	grep -q "it is a FIFO owned by uid 65534" start-fifo.err &&
	unchanged
'

# rotate_and_plant NAME CMD...: starts sockserve -o $D/lines.log as NAME
# (a shell name: it names variables),
# sends a line, lets nobody rename the file away, runs CMD, sends
# SIGHUP; the reopen must be refused and the old file keep the lines.
rotate_and_plant() {
	local name=$1
	shift
	reset_dir &&
	start_server "$name" -o "$D/lines.log" 127.0.0.1:0 &&
	local pid_var=${name}_pid addr_var=${name}_addr &&
	acked "${!addr_var}" before &&
	nobody mv "$D/lines.log" "$D/lines.log.1" &&
	"$@" &&
	kill -HUP "${!pid_var}" &&
	wait_for "$name.err" "cannot reopen output $D/lines.log" &&
	grep "cannot reopen output" "$name.err" | grep -q "still writing to the old one$" &&
	acked "${!addr_var}" after &&
	stop_server "$name" &&
	test "$(cat "$D/lines.log.1")" = "before
after" &&
	! grep -q "reopened output" "$name.err"
}

test_expect_success 'a dangling symlink swapped in before SIGHUP: refused, nothing created' '
	rotate_and_plant hup_link nobody ln -s "$TRASH/created-by-root" "$D/lines.log" &&
	grep -q "it is a symbolic link" hup_link.err &&
	test ! -e "$TRASH/created-by-root" &&
	unchanged
'

test_expect_success 'a FIFO swapped in before SIGHUP (no reader): refused, acks go on' '
	rotate_and_plant hup_fifo nobody mkfifo -m 0666 "$D/lines.log" &&
	grep -q "it is a FIFO" hup_fifo.err &&
	unchanged
'

# steal: nobody makes a FIFO at the output path and holds it open for
# reading (O_RDWR does not wait for a writer), copying what comes to
# $TRASH/stolen; ready once $D/ready exists.
steal() {
	nobody mkfifo -m 0666 "$D/lines.log" &&
	{ setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "exec 8<>\"$D/lines.log\" && : >\"$D/ready\" && exec timeout 30 cat <&8" >"$TRASH/stolen" & } &&
	thief=$! && PIDS+=($thief) &&
	for i in $(seq 500); do test -e "$D/ready" && break; sleep 0.02; done &&
	test -e "$D/ready"
}

test_expect_success 'a FIFO swapped in before SIGHUP (attacker reading): no line reaches it' '
	rotate_and_plant hup_fifo_read steal &&
	grep -q "it is a FIFO owned by uid 65534" hup_fifo_read.err &&
	kill "$thief" && { wait "$thief"; true; } &&
	test ! -s "$TRASH/stolen" &&
	unchanged
'

test_expect_success 'no chmod of the socket by name after bind(2) (strace)' '
	reset_dir &&
	{ strace -f -o trace -e trace=/chmod,bind,umask sockserve --unix-mode 0600 "unix:$D/s.sock" >chmod.out 2>chmod.err & } &&
	tracer=$! && PIDS+=($tracer) &&
	wait_for chmod.err "listening on" &&
	traced=$(pgrep -P $tracer -x sockserve) && PIDS+=($traced) &&
	acked "unix:$D/s.sock" over-unix &&
	test "$(stat -c %a "$D/s.sock")" = 600 &&
	kill -TERM "$traced" &&
	wait $tracer &&
	cat trace &&
	grep -q "bind(.*s\.sock" trace &&
	! grep -q "chmod" trace &&
	test ! -e "$D/s.sock" &&
	unchanged
'

test_expect_success 'a symlink at a stale socket path is neither followed nor removed' '
	reset_dir &&
	nobody ln -s "$V/stale.sock" "$D/s.sock" &&
	refused sock-link "unix:$D/s.sock" &&
	grep -q "is not a socket (it is a symbolic link); not replacing it" sock-link.err &&
	test -L "$D/s.sock" &&
	unchanged
'

test_expect_success 'a link swapped in for our socket is not removed at exit, nor its target' '
	reset_dir &&
	start_server sock_swap "unix:$D/s.sock" &&
	acked "unix:$D/s.sock" first &&
	nobody sh -c "rm \"$D/s.sock\" && ln -s \"$V/shadow\" \"$D/s.sock\"" &&
	stop_server sock_swap &&
	test -L "$D/s.sock" &&
	unchanged
'

test_expect_success 'the directories nobody can write are warned about' '
	grep -q "the directory of output $D/lines.log is not private: it belongs to uid 65534" hup_link.err &&
	grep -q "the directory of socket $D/s.sock is not private: it belongs to uid 65534" sock_swap.err
'

test_done
