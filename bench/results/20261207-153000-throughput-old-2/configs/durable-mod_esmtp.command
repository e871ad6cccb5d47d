/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-awudu38b/conf/httpd.conf -DFOREGROUND
