/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-idle-t4dvigbf/conf/httpd.conf -DFOREGROUND
