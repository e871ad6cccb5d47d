/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-2v_urqfy/conf/httpd.conf -DFOREGROUND
