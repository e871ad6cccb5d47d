/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-__3mtoov/conf/httpd.conf -DFOREGROUND
