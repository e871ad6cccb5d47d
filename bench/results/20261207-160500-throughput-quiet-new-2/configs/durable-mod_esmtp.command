/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-9s773tmk/conf/httpd.conf -DFOREGROUND
