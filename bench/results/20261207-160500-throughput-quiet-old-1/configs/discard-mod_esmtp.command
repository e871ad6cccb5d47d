/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-i6dyxtxy/conf/httpd.conf -DFOREGROUND
