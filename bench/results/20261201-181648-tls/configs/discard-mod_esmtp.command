/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-sr99c2jj/conf/httpd.conf -DFOREGROUND
