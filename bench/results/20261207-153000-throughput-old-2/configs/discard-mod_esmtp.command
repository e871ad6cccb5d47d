/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-n96o8vcw/conf/httpd.conf -DFOREGROUND
