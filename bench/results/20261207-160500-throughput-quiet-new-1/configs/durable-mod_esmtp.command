/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-ih1ckshx/conf/httpd.conf -DFOREGROUND
