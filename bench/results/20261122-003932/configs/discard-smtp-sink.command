/usr/sbin/smtp-sink -u postfix -m 256 127.0.0.1:48265 256
