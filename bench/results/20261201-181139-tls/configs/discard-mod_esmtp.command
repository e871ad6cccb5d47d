/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-vdkwgon4/conf/httpd.conf -DFOREGROUND
