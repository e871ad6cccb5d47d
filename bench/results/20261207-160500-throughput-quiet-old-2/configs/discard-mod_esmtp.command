/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-rh8w4hqp/conf/httpd.conf -DFOREGROUND
