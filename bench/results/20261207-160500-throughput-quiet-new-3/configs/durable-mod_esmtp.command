/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-nnj6dqud/conf/httpd.conf -DFOREGROUND
