#!/usr/bin/env bash
# The README's set-up and its tour, run as a new user would type them, in
# a fresh clone of the working tree: the set-up's run command (build, then
# start the server) and every "$ " command of the tour, whose output must
# be exactly what the README prints. Never the test command itself.
#
# The clone shares the project's target/ (a symlink, and CARGO_TARGET_DIR),
# so the build is incremental, not a second cold build. The server binds
# the README's 127.0.0.1:10008 literally, so the server and the tour run
# in a network namespace of their own (unshare -n), where that port is
# theirs whatever else runs on this machine.
. "$(dirname "$0")/lib.sh"

README=$ROOT/README.md

# section TITLE: the lines of the README section "## TITLE", up to the next.
section() { awk -v t="## $1" '$0 == t {f = 1; next} /^## / {f = 0} f' "$README"; }

# first_block: the first indented code block of standard input, unindented.
first_block() { awk '/^    / {f = 1; sub(/^    /, ""); print; next} f {exit}'; }

if ! command -v git >/dev/null || ! command -v cargo >/dev/null; then
	skip_all "needs git and cargo"
fi
# A network namespace: as root, or as a user through a user namespace.
NETNS=
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
	NETNS="unshare -n"
elif unshare -rn true 2>/dev/null; then
	NETNS="unshare -rn"
fi

test_expect_success 'the README has a run command and a tour' '
	section Set-up | first_block >setup.sh &&
	section "A 30-second tour" >tour.md &&
	test -s setup.sh && grep -q "^    \$ " tour.md &&
	cat setup.sh &&
	! grep -q "scripts/test" setup.sh
'

test_expect_success 'a fresh clone of the working tree, sharing target/' '
	git clone -q "$ROOT" clone &&
	(cd clone && git checkout -q "$(git -C "$ROOT" rev-parse HEAD)") &&
	# Uncommitted changes to tracked files too: the README as it is now.
	git -C "$ROOT" diff HEAD --binary >wip.diff &&
	if [ -s wip.diff ]; then (cd clone && git apply ../wip.diff); fi &&
	ln -s "$ROOT/target" clone/target
'

# The set-up block: every line but the last runs in the foreground (the
# build); the last starts the server, in the background, and must say
# "listening on".
head -n -1 setup.sh >build.sh 2>/dev/null
tail -n 1 setup.sh >serve.sh 2>/dev/null

test_expect_success 'the run command builds both tools where the README says' '
	# Built by this command, not left over from an earlier build.
	rm -f "$ROOT/target/release/sockserve" "$ROOT/target/release/sockclient" &&
	(cd clone && CARGO_TARGET_DIR=$ROOT/target timeout 1200 bash -e ../build.sh) >build.log 2>&1 ||
		{ cat build.log; false; } &&
	test -x clone/target/release/sockserve &&
	test -x clone/target/release/sockclient &&
	grep -q "target/release/sockserve" "$README" &&
	grep -q "target/release/sockclient" "$README"
'

# tour.sh: each "$ " command of the tour, its output (standard output and
# error) to out.N; expected output in want.N.
awk -v dir="$TRASH" '
	/^    \$ / { n++; cmd = substr($0, 7)
		printf "{ %s\n} >%s/out.%d 2>&1\n", cmd, dir, n > (dir "/tour.sh")
		printf "" > (dir "/want." n); next }
	/^    / && n { print substr($0, 5) >> (dir "/want." n) }
' tour.md

run_tour() {
	cat >tour-run.sh <<-EOF
	set -u
	ip link set lo up 2>/dev/null || true
	cd "$TRASH/clone"
	bash "$TRASH/serve.sh" >"$TRASH/server.out" 2>"$TRASH/server.err" &
	server=\$!
	for i in \$(seq 500); do grep -q "listening on" "$TRASH/server.err" && break; sleep 0.02; done
	grep -q "listening on 127.0.0.1:10008" "$TRASH/server.err" || { cat "$TRASH/server.err"; exit 1; }
	( cd "$TRASH/clone" && . "$TRASH/tour.sh" )
	status=\$?
	pkill -TERM -P \$server 2>/dev/null; kill -TERM \$server 2>/dev/null
	wait \$server
	exit \$status
	EOF
	timeout 120 $NETNS bash tour-run.sh
}

# count.sh: the README's way to count what a server receives (the last
# block of "In pipelines"), line by line; after the line that starts the
# server in the background, a bounded wait for its "listening on" (a
# person typing gives it that time). A line with "# N" must print N.
section "In pipelines" | awk '/^    / {b = b substr($0, 5) "\n"; next} b != "" {last = b; b = ""} END {printf "%s", b != "" ? b : last}' >count-block.sh
awk -v dir="$TRASH" '
	BEGIN { print "set -u"; print "exec 2>" dir "/count.err" }
	/&$/ { print; print "for i in $(seq 500); do grep -q \"listening on\" " dir "/count.err && break; sleep 0.02; done"; next }
	/# [0-9]+$/ { want = $NF; print "got=$(" $0 "\n)"; print "[ \"$got\" = " want " ] || { echo \"printed $got, not " want "\" >&2; exit 1; }"; next }
	{ print }
	END { print "wait" }
' count-block.sh >count.sh

if [ -z "$NETNS" ]; then
	test_skip 'the tour, as printed' 'no network namespace (unshare -n) for 127.0.0.1:10008'
	test_skip 'counting what a server receives' 'no network namespace (unshare -n) for 127.0.0.1:10008'
else
	test_expect_success 'the tour passes exactly as printed' '
		test -s tour.sh &&
		run_tour &&
		for w in want.*; do
			n=${w#want.} &&
			{ diff -u "$w" "out.$n" || { echo "# after: $(sed -n "${n}p" tour.sh)"; false; }; } || return 1
		done &&
		cat server.err &&
		# The server wrote every line it acked.
		test "$(wc -l <server.out)" = 2000
	'

	test_expect_success 'counting what a server receives, as the README says' '
		cat count-block.sh &&
		grep -q "^sockserve -o lines.txt &$" count-block.sh &&
		mkdir -p count && cd count &&
		PATH=$TRASH/clone/target/release:$PATH timeout 60 $NETNS bash -c "ip link set lo up 2>/dev/null; bash ../count.sh" ||
			{ cat ../count.err; cd ..; false; } &&
		cd "$TRASH" && test "$(wc -l <count/lines.txt)" = 1000 &&
		grep -q "draining" count.err
	'
fi

test_done
