#!/usr/bin/env bash
# TLS as the README shows it: its private-CA example run as written (the
# ports moved to 27443 and 27444), then openssl's own client and a plain
# client against the server it made, and TLS passed through HAProxy
# (27445) with a PROXY v2 header in front of the handshake (27446).
. "$(dirname "$0")/lib.sh"

command -v openssl >/dev/null || skip_all "openssl is not installed"
for p in 27443 27444 27445 27446; do
	(exec 6<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && skip_all "port $p is in use on this machine"
done

# readme_block INFO: the fenced block of the README whose info string is INFO.
readme_block() { awk -v t="$1" '$0 == "```" t {f = 1; next} /^```/ {f = 0} f' "$ROOT/README.md"; }

test_expect_success 'the README example runs as written: private CA, TLS, mutual TLS' '
	{ echo "trap '"'"'kill \$(jobs -p) 2>/dev/null || true'"'"' EXIT"; readme_block "sh tls-example"; } |
		sed "s/10443/27443/g; s/10444/27444/g" >example.sh &&
	grep -q "sockclient --retry 5 --tls --tls-ca ca.pem" example.sh &&
	{ bounded bash -e example.sh >example.out 2>example.err; r=$?; cat example.out example.err; test $r = 0; } &&
	test "$(grep -c "^Information Received$" example.out)" = 4 &&
	grep -qx 1 example.out && grep -qx 3 example.out &&
	grep -q "^127\.0\.0\.1:[0-9]* CN=alice,O=Example	hello$" example.out &&
	grep -q "127\.0\.0\.1:[0-9]* CN=alice,O=Example: closed (client EOF): 1 lines, 1 acks" example.err
'

test_expect_success 'openssl s_client gets the greeting and the acks' '
	start_server tls --idle-timeout 2s --tls-cert server.pem --tls-key server.key 127.0.0.1:0 &&
	printf "one\ntwo\n" | bounded openssl s_client -quiet -verify_return_error \
		-CAfile ca.pem -connect "$tls_addr" >s_client.out 2>s_client.err &&
	printf "connect\nInformation Received\nInformation Received\n" >want &&
	cmp want s_client.out &&
	test "$(cat tls.out)" = "$(printf "one\ntwo")"
'

test_expect_success 'a plain client on the TLS port fails cleanly on both sides' '
	! echo x | bounded sockclient --connect-timeout 1s "$tls_addr" 2>plain.err &&
	grep -q "no greeting came within 1.0 s; if the server speaks TLS, give --tls" plain.err &&
	(exec 6<>"/dev/tcp/${tls_addr%:*}/${tls_addr##*:}" && echo "in clear" >&6 && timeout 10 cat <&6 >clear.out 2>/dev/null);
	! grep -q connect clear.out &&
	wait_for tls.err "refused: TLS handshake failed: not TLS, or broken TLS" &&
	test "$(cat tls.out)" = "$(printf "one\ntwo")" &&
	stop_server tls
'

if command -v haproxy >/dev/null; then
	cat >haproxy.cfg <<-EOF
	defaults
	    mode tcp
	    timeout connect 5s
	    timeout client 30s
	    timeout server 30s
	frontend tls_in
	    bind 127.0.0.1:27445
	    default_backend sockserve
	backend sockserve
	    server s1 127.0.0.1:27446 send-proxy-v2
	EOF
	test_expect_success 'behind HAProxy: the PROXY header first, then the handshake' '
		start_server behind --prefix-peer --proxy-protocol 127.0.0.1 \
			--tls-cert server.pem --tls-key server.key 127.0.0.1:27446 &&
		{ haproxy -db -f haproxy.cfg >haproxy.log 2>&1 & PIDS+=($!); } &&
		echo "via haproxy" | bounded sockclient --retry 5 --tls --tls-ca ca.pem localhost:27445 >acks &&
		test "$(cat acks)" = "Information Received" &&
		grep -q "^127\.0\.0\.1:[0-9]*	via haproxy$" behind.out &&
		! grep -q refused behind.err &&
		stop_server behind
	'
else
	test_skip 'behind HAProxy: the PROXY header first, then the handshake' "haproxy is not installed"
fi

test_done
