/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-1m245j2t/conf/httpd.conf -DFOREGROUND
