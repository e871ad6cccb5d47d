/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-mx1m6rxk/conf/httpd.conf -DFOREGROUND
