/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-tls-2omyhtv1/conf/httpd.conf -DFOREGROUND
