/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-q9xzn43x/conf/httpd.conf -DFOREGROUND
