FLUSHDELAY_US=2000 LD_PRELOAD=/work/main/bench/flushdelay.so /usr/bin/perl /work/main/bench/peers/netserver_mail.pl --port 42961 --mode durable --maildir /tmp/esmtp-bench-perl-a4ot1h5r/Maildir
