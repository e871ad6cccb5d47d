/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-7xx9q21y/conf/httpd.conf -DFOREGROUND
