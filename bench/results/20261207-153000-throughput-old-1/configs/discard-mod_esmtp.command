/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-c9pk6_9q/conf/httpd.conf -DFOREGROUND
