FLUSHDELAY_US=2000 LD_PRELOAD=/work/main/bench/flushdelay.so /usr/bin/node /work/main/bench/peers/smtp_server.js --port 33417 --mode durable --maildir /tmp/esmtp-bench-node-auj4e5uc/Maildir
