complete -c sockserve -l greeting -d 'Greeting line sent on connect' -r -f
complete -c sockserve -l ack -d 'Acknowledgement line sent for every line received' -r -f
complete -c sockserve -l refusal -d 'Text of the refusal greeting (a greeting containing it is a refusal)' -r -f
complete -c sockserve -l max-line -d 'Longest line accepted, in bytes, line ending excluded; a longer one closes the connection unacked' -r -f
complete -c sockserve -l max-connections -d 'Connections served at once; more get the refusal greeting' -r -f
complete -c sockserve -l idle-timeout -d 'Close a connection that sends no complete line for this long (0: never)' -r -f
complete -c sockserve -l drain-timeout -d 'Longest drain after SIGTERM or SIGINT before connections are cut' -r -f
complete -c sockserve -s o -l output -d 'Append received lines to this file (mode 0640 if created) instead of standard output; SIGHUP reopens it' -r -F
complete -c sockserve -l format -d 'What each received line becomes in the output: the line itself (plain), or a JSON object with time, peer, connection, line and text (json)' -r -f -a "plain\t'The line itself'
json\t'One JSON object per line'"
complete -c sockserve -l backlog -d 'Re-apply listen(2) with this backlog to every listener, inherited ones included (default: 4096 for sockserve\'s own binds; inherited backlogs left as they are); net.core.somaxconn caps it' -r -f
complete -c sockserve -l unix-mode -d 'Mode of the Unix socket files sockserve creates, in octal' -r -f
complete -c sockserve -l fd-name -d 'Serve only the inherited sockets with this LISTEN_FDNAMES name (repeatable)' -r -f
complete -c sockserve -l allow -d 'Serve only TCP peers in this address or CIDR block (repeatable)' -r -f
complete -c sockserve -l deny -d 'Refuse TCP peers in this address or CIDR block (repeatable; wins over --allow)' -r -f
complete -c sockserve -l proxy-protocol -d 'TCP peers in this address or CIDR block (a load balancer) must begin each connection with a PROXY protocol header (v1 or v2), whose source is then the peer; other TCP peers are refused (repeatable)' -r -f
complete -c sockserve -l max-per-source -d 'Serve at most N connections at once from one source address; more get the refusal greeting' -r -f
complete -c sockserve -l allow-uid -d 'Serve only Unix peers running as this user, by id or name (repeatable)' -r -f
complete -c sockserve -l allow-gid -d 'Serve only Unix peers whose primary group is this, by id or name (repeatable)' -r -f
complete -c sockserve -l tls-cert -d 'Speak TLS (1.2 and 1.3) on every TCP connection, with this certificate (PEM; the chain may follow it); Unix sockets stay plain. SIGHUP reloads it' -r -F
complete -c sockserve -l tls-key -d 'The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)' -r -F
complete -c sockserve -l tls-client-ca -d 'Require a client certificate signed by a CA of this PEM file (mutual TLS); its subject joins the peer\'s name' -r -F
complete -c sockserve -l fsync -d 'Ack a line only after fdatasync(2) of the output returned'
complete -c sockserve -l prefix-peer -d 'Write the peer\'s address and a tab before each received line (--format plain only)'
complete -c sockserve -l journal -d 'Send each received line to the journal as an entry of its own, exactly, at priority 6, with SOCKSERVE_PEER, SOCKSERVE_CONNECTION and SOCKSERVE_LINE fields; the default when standard output is the journal and no --output is given'
complete -c sockserve -l receive-only -d 'Send clients nothing (no greeting, no acks, no refusal text): for senders that never read, such as logger, nc -N or socat -u'
complete -c sockserve -l inetd -d 'Serve the one connection on standard input (inetd style), then exit; received lines go to --output or standard error'
complete -c sockserve -l reuse-port -d 'Set SO_REUSEPORT on the TCP sockets sockserve binds, so that several processes can listen on one port'
complete -c sockserve -s q -l quiet -d 'Log only warnings and errors'
complete -c sockserve -s v -l verbose -d 'Log more (every connection\'s start)'
complete -c sockserve -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockserve -s V -l version -d 'Print version'
