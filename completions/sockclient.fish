complete -c sockclient -l greeting -d 'Greeting line sent on connect' -r -f
complete -c sockclient -l ack -d 'Acknowledgement line sent for every line received' -r -f
complete -c sockclient -l refusal -d 'Text of the refusal greeting (a greeting containing it is a refusal)' -r -f
complete -c sockclient -l connect-timeout -d 'Give up connecting (and waiting for the greeting) after this long' -r
complete -c sockclient -l retry -d 'Try again this many times, with exponential backoff, when the connection fails or the server refuses' -r
complete -c sockclient -l ack-timeout -d 'Give up when no ack comes for this long while acks are owed (default: wait as long as the server keeps the connection)' -r
complete -c sockclient -l echo -d 'Print LINE<TAB>ACK for every acked line instead of the ack alone'
complete -c sockclient -s q -l quiet -d 'Print nothing; only the exit status speaks'
complete -c sockclient -s v -l verbose -d 'Print the greeting and a summary on standard error'
complete -c sockclient -s h -l help -d 'Print help'
complete -c sockclient -s V -l version -d 'Print version'
