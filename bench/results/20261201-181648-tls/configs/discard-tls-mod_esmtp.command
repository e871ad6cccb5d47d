/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-tls-kso1lq6r/conf/httpd.conf -DFOREGROUND
