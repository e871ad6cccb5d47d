/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-f7e4d61_/conf/httpd.conf -DFOREGROUND
