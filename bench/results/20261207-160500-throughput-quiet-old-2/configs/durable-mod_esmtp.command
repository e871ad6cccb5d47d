/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-m4xtmp66/conf/httpd.conf -DFOREGROUND
