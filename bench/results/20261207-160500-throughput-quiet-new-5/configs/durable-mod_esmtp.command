/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-yr6cghk4/conf/httpd.conf -DFOREGROUND
