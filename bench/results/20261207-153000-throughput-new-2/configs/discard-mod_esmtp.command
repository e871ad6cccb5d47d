/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-bxl36x1g/conf/httpd.conf -DFOREGROUND
