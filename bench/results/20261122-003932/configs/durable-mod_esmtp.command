/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-gk64azd6/conf/httpd.conf -DFOREGROUND
