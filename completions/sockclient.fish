complete -c sockclient -l greeting -d 'The greeting expected on connect; when given, any other greeting is an error (by default any greeting but a refusal is accepted)' -r -f
complete -c sockclient -l ack -d 'The ack line expected from the server for every line sent' -r -f
complete -c sockclient -l refusal -d 'The text that marks a refusal: a greeting containing it means the server will not serve this client' -r -f
complete -c sockclient -l connect-timeout -d 'Give up connecting (and waiting for the greeting) after this long; above 0' -r -f
complete -c sockclient -l retry -d 'Try again up to N times in a row, with exponential backoff, when connecting fails or the server refuses; also reconnect and resend the unacked lines when the connection breaks' -r -f
complete -c sockclient -l ack-timeout -d 'Give up when no ack comes for this long while acks are owed (default, or 0: wait as long as the server keeps the connection)' -r -f
complete -c sockclient -l window -d 'Keep at most this many bytes of unacked lines; stop reading standard input while it is full (K, M, G suffixes)' -r -f
complete -c sockclient -l echo -d 'Print LINE<TAB>ACK for every acked line instead of the ack alone'
complete -c sockclient -s q -l quiet -d 'Print nothing on standard output, and no report of a stop; only the exit status (and errors) speak'
complete -c sockclient -s v -l verbose -d 'Print the greeting, failed attempts, reconnects and a summary on standard error'
complete -c sockclient -s h -l help -d 'Print help'
complete -c sockclient -s V -l version -d 'Print version'
