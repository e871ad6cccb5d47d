/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-zt3xtvsm/conf/httpd.conf -DFOREGROUND
