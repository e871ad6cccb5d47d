/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-idle-fc_12jap/conf/httpd.conf -DFOREGROUND
