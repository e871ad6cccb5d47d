/usr/sbin/smtp-sink -u postfix -m 256 127.0.0.1:40161 256
