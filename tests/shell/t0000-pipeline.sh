#!/usr/bin/env bash
# The tools as a user would use them in a shell pipeline.
. "$(dirname "$0")/lib.sh"

start_server srv 127.0.0.1:0 || exit 1

test_expect_success 'seq 1000 | sockclient | wc -l counts 1000 acks' '
	n=$(seq 1000 | bounded sockclient "$srv_addr" | wc -l) &&
	test "$n" -eq 1000
'

test_expect_success 'received lines reach the server output in order' '
	head -1000 srv.out >got &&
	seq 1000 >want &&
	cmp got want
'

test_expect_success 'HOST PORT form, like nc' '
	echo hi | bounded sockclient "${srv_addr%:*}" "${srv_addr##*:}" >acks &&
	test "$(cat acks)" = "Information Received"
'

test_expect_success '--echo pairs each line with its ack' '
	printf "a\nb\n" | bounded sockclient --echo "$srv_addr" >pairs &&
	printf "a\tInformation Received\nb\tInformation Received\n" >want &&
	cmp pairs want
'

test_expect_success '-q prints nothing, exit status says all acked' '
	seq 10 | bounded sockclient -q "$srv_addr" >quiet &&
	test ! -s quiet &&
	test "$(seq 1000 | sockclient -q "$srv_addr"; echo "exit status $?")" = "exit status 0"
'

test_expect_success 'sockclient | head -1 ends quietly' '
	seq 100000 | bounded sockclient "$srv_addr" 2>err | head -1 >first &&
	test "$(cat first)" = "Information Received" &&
	test ! -s err
'

test_expect_success 'nothing listening: exit status 4' '
	port=$(python3 -c "import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])") &&
	{ echo x | bounded sockclient 127.0.0.1 "$port" 2>err; test $? -eq 4; } &&
	grep -q "sockclient: cannot connect to 127.0.0.1:$port: connection refused" err
'

test_expect_success 'a server at its connection limit refuses: exit status 3' '
	start_server busy --max-connections 1 127.0.0.1:0 &&
	exec 7<>/dev/tcp/${busy_addr%:*}/${busy_addr##*:} &&
	read -r -t 10 greeting <&7 &&
	test "$greeting" = connect &&
	{ echo x | bounded sockclient "$busy_addr" 2>err; test $? -eq 3; } &&
	grep -q "not connect: server busy" err &&
	exec 7>&- &&
	stop_server busy
'

test_expect_success 'server output piped on: sockserve | grep' '
	dir=$TRASH/pipe && mkdir -p "$dir" &&
	{ (echo $BASHPID >$dir/pid && exec sockserve unix:$dir/s.sock) 2>$dir/err |
		grep --line-buffered -v skip >$dir/out & } &&
	grep_pid=$! && PIDS+=("$grep_pid") &&
	wait_for $dir/err "listening on" &&
	serve_pid=$(cat $dir/pid) && PIDS+=("$serve_pid") &&
	printf "keep 1\nskip\nkeep 2\n" | bounded sockclient unix:$dir/s.sock >/dev/null &&
	wait_for $dir/out "keep 2" &&
	kill -TERM "$serve_pid" &&
	reap "$grep_pid" &&
	test "$(cat $dir/out)" = "keep 1
keep 2"
'

test_expect_success 'SIGTERM: exit status 0' '
	stop_server srv
'

test_done
