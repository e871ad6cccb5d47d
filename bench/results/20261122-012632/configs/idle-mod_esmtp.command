/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-idle-vrbc49yo/conf/httpd.conf -DFOREGROUND
