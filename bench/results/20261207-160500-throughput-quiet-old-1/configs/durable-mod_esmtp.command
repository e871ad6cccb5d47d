/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-l1u0snct/conf/httpd.conf -DFOREGROUND
