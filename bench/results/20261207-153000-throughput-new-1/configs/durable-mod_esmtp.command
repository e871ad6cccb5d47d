/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-5i8v03r5/conf/httpd.conf -DFOREGROUND
