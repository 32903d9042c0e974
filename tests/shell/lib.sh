# lib.sh: a small TAP library for the shell tests, in the spirit of git's
# t/test-lib.sh. Source it, call test_expect_success TITLE 'BODY' for each
# test (the body chains its steps with &&), and end with test_done.
#
# Every wait is bounded; servers are started in the background and their
# "listening on" line is read before any test talks to them; everything
# started is killed when the script exits.

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${SOCKSERVE_BIN:-$ROOT/target/debug}
PATH=$BIN:$PATH
export PATH
TRASH=$(mktemp -d "${TMPDIR:-/tmp}/sockserve-test.XXXXXX")
test_count=0
test_failed=0
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$TRASH"
}
trap cleanup EXIT
cd "$TRASH" || exit 1

say() { printf '# %s\n' "$*"; }

test_expect_success() {
	local title=$1 body=$2
	test_count=$((test_count + 1)); SECONDS=0
	# In this shell, as git does, so servers a test starts stay its children.
	if eval "$body" >"$TRASH/.out" 2>&1; then
		echo "ok $test_count - $title (${SECONDS}s)"
	else
		test_failed=$((test_failed + 1))
		echo "not ok $test_count - $title"
		sed 's/^/#    /' "$TRASH/.out"
	fi
}

test_skip() {
	test_count=$((test_count + 1))
	echo "ok $test_count # skip $1 ($2)"
}

skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}

test_done() {
	echo "1..$test_count"
	[ "$test_failed" -eq 0 ]
}

# wait_for FILE PATTERN [SECONDS]: until a line of FILE matches, or fail.
wait_for() {
	local file=$1 pat=$2 t=${3:-20} i
	for ((i = 0; i < t * 50; i++)); do
		grep -q -- "$pat" "$file" 2>/dev/null && return 0
		sleep 0.02
	done
	echo "timed out waiting for '$pat' in $file:" >&2
	cat "$file" >&2
	return 1
}

# start_server NAME ARGS...: runs sockserve ARGS in the background with
# stdout in NAME.out and stderr in NAME.err; sets NAME_pid and NAME_addr
# (the first address it listens on).
start_server() {
	local name=$1
	shift
	sockserve "$@" >"$TRASH/$name.out" 2>"$TRASH/$name.err" &
	local pid=$!
	PIDS+=("$pid")
	wait_for "$TRASH/$name.err" "listening on" || return 1
	printf -v "${name}_pid" %s "$pid"
	printf -v "${name}_addr" %s "$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$TRASH/$name.err" | head -1)"
}

# reap PID [SECONDS]: waits (at most SECONDS, 20 by default) for PID, a
# child of this shell, to exit, and returns its exit status. If it is
# still running then, it is killed and reap fails saying so.
reap() {
	local pid=$1 t=${2:-20} i
	for ((i = 0; i < t * 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.02
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "pid $pid still running after ${t}s: killed" >&2
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 1
	fi
	wait "$pid"
}

# stop_server NAME: SIGTERM, then wait (bounded) and check exit status 0.
stop_server() {
	local pid_var="${1}_pid"
	local pid=${!pid_var}
	kill -TERM "$pid" 2>/dev/null
	reap "$pid" 20
}

# bounded COMMAND...: runs COMMAND with a time limit of 60 s.
bounded() { timeout 60 "$@"; }
