/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-b91vd5le/conf/httpd.conf -DFOREGROUND
