/usr/sbin/smtp-sink -u postfix -m 256 127.0.0.1:55769 256
