#!/usr/bin/env bash
# The README's TLS drop-in (LoadCredential=) on the shipped units, under a
# real systemd as PID 1. The machinery is t0200-systemd.sh's, unchanged:
# isolated
# the way systemd-pid1-example.sh of the project's shared tools does it: its own cgroup
# directory AND cgroup namespace, new pid/mount/uts/ipc namespaces, an
# overlay of / (read-only below, tmpfs above) so nothing reaches the
# host's files, a watchdog that kills the whole subtree after 120 s, and
# cleanup at exit. The host network is shared, so the units' 127.0.0.1
# listeners are reachable from here.
. "$(dirname "$0")/lib.sh"

. "$ROOT/tests/shell/lib-systemd.sh"
command -v openssl >/dev/null || skip_all "openssl is not installed"
# A drop-in moves the TCP socket to 27220, away from t0200's 10008 and
# 10009 and t0210's 24008 and 24009; the Accept=yes units are not started.
# systemd makes credentials appear in /run/credentials by mount
# propagation, so /run must be shared (as systemd's container interface
# asks); inside a namespace made with private propagation, no mount
# reaches the host.
SD_SHARED_RUN=1 sd_boot sockserve-tls-test 120 27220

# Install as shipped: the binaries where the units expect them, the units
# unchanged; the socket moved by a drop-in.
cp "$BIN/sockserve" "$BIN/sockclient" "$CR/usr/bin/"
cp "$ROOT"/systemd/* "$CR/etc/systemd/system/"
mkdir -p "$CR/usr/share/man/man1"
cp "$ROOT"/man/*.1 "$CR/usr/share/man/man1/"
mkdir -p "$CR/etc/systemd/system/sockserve.socket.d" "$CR/etc/systemd/system/sockserve.service.d"
printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:27220\nListenStream=/run/sockserve/sockserve.sock\n' \
	>"$CR/etc/systemd/system/sockserve.socket.d/port.conf"

# readme_block INFO: the fenced block of the README whose info string is INFO.
readme_block() { awk -v t="$1" '$0 == "```" t {f = 1; next} /^```/ {f = 0} f' "$ROOT/README.md"; }

# cert NAME CA: a certificate for localhost and 127.0.0.1 signed by CA.
ca() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=$1" -keyout "$1.key" -out "$1.pem" 2>/dev/null
}
cert() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj "/CN=localhost" -keyout "$1.key" -out "$1.csr" 2>/dev/null &&
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$1.ext" &&
	openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
		-days 30 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
TLSDIR=$CR/etc/sockserve/tls

test_expect_success 'the README drop-in, the key readable by root alone' '
	ca ca1 && cert server1 ca1 &&
	mkdir -p "$TLSDIR" &&
	install -m 0644 server1.pem "$TLSDIR/server.pem" &&
	install -m 0600 server1.key "$TLSDIR/server.key" &&
	readme_block "systemd tls" >"$CR/etc/systemd/system/sockserve.service.d/tls.conf" &&
	grep -q "^LoadCredential=tls-key:/etc/sockserve/tls/server.key$" "$CR/etc/systemd/system/sockserve.service.d/tls.conf" &&
	test "$(stat -c %a:%u "$TLSDIR/server.key")" = 600:0 &&
	SC daemon-reload &&
	E systemd-analyze verify /etc/systemd/system/sockserve.socket /etc/systemd/system/sockserve.service >verify 2>&1;
	cat verify && test ! -s verify &&
	SC start sockserve.socket &&
	test "$(SC is-active sockserve.socket)" = active
'

test_expect_success 'TCP speaks TLS: sockclient verifies the server and gets its acks' '
	seq 3 | bounded sockclient --retry 3 --tls --tls-ca ca1.pem localhost:27220 >acks &&
	test "$(wc -l <acks)" -eq 3 &&
	test "$(SC show -p ActiveState --value sockserve.service)" = active &&
	for i in $(seq 100); do
		E journalctl -u sockserve.service -o cat --no-pager >journal 2>&1
		grep -qx 3 journal && break
		sleep 0.1
	done &&
	grep -qx 1 journal && grep -qx 3 journal &&
	! grep -q "can be read by every user" journal
'

test_expect_success 'the service ran as its dynamic user, reading the credential copies' '
	pid=$(SC show -p MainPID --value sockserve.service) &&
	test "$(E stat -c %u /proc/$pid)" != 0 &&
	E cat /proc/$pid/cmdline | tr "\0" " " >cmdline &&
	cat cmdline &&
	grep -q -- "--tls-key /run/credentials/sockserve.service/tls-key" cmdline
'

test_expect_success 'a plain client on the TLS port is told; the Unix socket stays plain' '
	! echo x | bounded sockclient --connect-timeout 1s 127.0.0.1:27220 2>plain.err &&
	grep -q "if the server speaks TLS, give --tls" plain.err &&
	echo over-unix | bounded sockclient "unix:$CR/run/sockserve/sockserve.sock" >acks &&
	test "$(cat acks)" = "Information Received"
'

test_expect_success 'a renewal: reload keeps the copy made at start, restart takes the new one' '
	ca ca2 && cert server2 ca2 &&
	install -m 0644 server2.pem "$TLSDIR/server.pem" &&
	install -m 0600 server2.key "$TLSDIR/server.key" &&
	SC reload sockserve.service &&
	for i in $(seq 100); do
		E journalctl -u sockserve.service -o cat --no-pager >journal 2>&1
		grep -q "reloaded the TLS certificate" journal && break
		sleep 0.1
	done &&
	grep -q "reloaded the TLS certificate /run/credentials/sockserve.service/tls-cert" journal &&
	echo still-old | bounded sockclient --tls --tls-ca ca1.pem localhost:27220 >acks &&
	test "$(cat acks)" = "Information Received" &&
	SC restart sockserve.service &&
	echo renewed | bounded sockclient --retry 3 --tls --tls-ca ca2.pem localhost:27220 >acks &&
	test "$(cat acks)" = "Information Received" &&
	! echo x | bounded sockclient --tls --tls-ca ca1.pem localhost:27220 2>old.err &&
	grep -q "unknown CA" old.err
'

if [ "$test_failed" -gt 0 ]; then
	say "journal of the manager and the units, for the failures above:"
	grep -v "^$" "$W/manager.log" | tail -80 | sed "s/^/#   /"
	E journalctl --no-pager -o short-monotonic -n 30 2>&1 | sed "s/^/#   /"
fi
test_done
