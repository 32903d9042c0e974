#!/usr/bin/env bash
# scripts/install into a temporary DESTDIR, the tree it lays out, and
# --uninstall removing exactly that.
. "$(dirname "$0")/lib.sh"

D=$TRASH/dest

test_expect_success 'installs into DESTDIR/PREFIX the tree packagers expect' '
	DESTDIR=$D PREFIX=/usr "$ROOT/scripts/install" --bin-dir "$BIN" >log &&
	(cd $D && find . -type f | sort) >got &&
	if [ -f /etc/debian_version ]; then z=vendor-completions; else z=site-functions; fi &&
	cat >want <<-EOT &&
	./usr/bin/sockclient
	./usr/bin/sockserve
	./usr/lib/systemd/system/sockserve-accept.socket
	./usr/lib/systemd/system/sockserve-accept@.service
	./usr/lib/systemd/system/sockserve.service
	./usr/lib/systemd/system/sockserve.socket
	./usr/lib/systemd/system/sockserve@.service
	./usr/lib/systemd/system/sockserve@.socket
	./usr/share/bash-completion/completions/sockclient
	./usr/share/bash-completion/completions/sockserve
	./usr/share/doc/sockserve/README.md
	./usr/share/fish/vendor_completions.d/sockclient.fish
	./usr/share/fish/vendor_completions.d/sockserve.fish
	./usr/share/man/man1/sockclient.1
	./usr/share/man/man1/sockserve.1
	./usr/share/sockserve/install-manifest
	./usr/share/zsh/$z/_sockclient
	./usr/share/zsh/$z/_sockserve
	EOT
	diff -u want got
'

test_expect_success 'installed binaries run; modes are right' '
	"$D/usr/bin/sockserve" --version | grep -qx "sockserve [0-9.]*" &&
	"$D/usr/bin/sockclient" --version | grep -qx "sockclient [0-9.]*" &&
	test "$(stat -c %a $D/usr/bin/sockserve)" = 755 &&
	test "$(stat -c %a $D/usr/share/man/man1/sockserve.1)" = 644
'

test_expect_success 'units point at PREFIX/bin' '
	grep -qx "ExecStart=/usr/bin/sockserve --fd-name sockserve" $D/usr/lib/systemd/system/sockserve.service &&
	DESTDIR=$TRASH/local PREFIX=/usr/local "$ROOT/scripts/install" --bin-dir "$BIN" >log &&
	grep -qx "ExecStart=/usr/local/bin/sockserve" "$TRASH/local/usr/local/lib/systemd/system/sockserve-accept@.service" &&
	test -f "$TRASH/local/usr/local/share/zsh/site-functions/_sockserve"
'

test_expect_success '--uninstall removes exactly what it installed' '
	mkdir -p $D/usr/share/man/man1 &&
	echo keep >$D/usr/share/man/man1/other.1 &&
	DESTDIR=$D PREFIX=/usr "$ROOT/scripts/install" --uninstall >log &&
	(cd $D && find . | sort) >left &&
	printf ".\n./usr\n./usr/share\n./usr/share/man\n./usr/share/man/man1\n./usr/share/man/man1/other.1\n" >want &&
	diff -u want left
'

test_expect_success 'a reinstall still uninstalls its folders' '
	DESTDIR=$TRASH/re PREFIX=/usr "$ROOT/scripts/install" --bin-dir "$BIN" >log &&
	DESTDIR=$TRASH/re PREFIX=/usr "$ROOT/scripts/install" --bin-dir "$BIN" >log &&
	DESTDIR=$TRASH/re PREFIX=/usr "$ROOT/scripts/install" --uninstall >log &&
	test -z "$(ls -A $TRASH/re)"
'

test_expect_success '--uninstall with another PREFIX says which PREFIX to give' '
	DESTDIR=$TRASH/other PREFIX=/usr "$ROOT/scripts/install" --bin-dir "$BIN" >log &&
	{ DESTDIR=$TRASH/other "$ROOT/scripts/install" --uninstall 2>err; test $? = 1; } &&
	grep -q "^scripts/install: nothing to uninstall: no manifest under $TRASH/other/usr/local (.*); give the PREFIX you installed with: there is one under $TRASH/other/usr, so: PREFIX=/usr scripts/install --uninstall\$" err &&
	test -f $TRASH/other/usr/bin/sockserve &&
	DESTDIR=$TRASH/other PREFIX=/usr "$ROOT/scripts/install" --uninstall >log &&
	test -z "$(ls -A $TRASH/other)"
'

test_expect_success 'without cargo on PATH (sudo), it says to build first and use --bin-dir' '
	nocargo=$TRASH/nocargo-bin && mkdir -p $nocargo &&
	for t in bash dirname sed grep cut sort mkdir install mktemp rm cat printf env; do
		ln -sf "$(command -v $t)" $nocargo/$t || return 1
	done &&
	{ DESTDIR=$TRASH/nc PATH=$nocargo "$ROOT/scripts/install" 2>err; test $? = 1; } &&
	grep -q "cannot build: cargo is not on PATH (sudo resets PATH); build as yourself with .cargo build --release., then run .sudo scripts/install --bin-dir target/release." err &&
	test ! -e $TRASH/nc/usr/local/bin/sockserve
'

test_expect_success 'bad use: exit 2 and no install' '
	{ PREFIX=relative "$ROOT/scripts/install" --bin-dir "$BIN" 2>err; test $? = 2; } &&
	grep -q "PREFIX must be absolute" err &&
	{ "$ROOT/scripts/install" --bogus 2>err; test $? = 2; }
'

test_expect_success 'the installed man pages are found by man' '
	if command -v man >/dev/null; then
		MANPATH=$TRASH/local/usr/local/share/man man -w sockserve | grep -q "man1/sockserve.1"
	fi
'

test_done
