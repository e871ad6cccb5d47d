/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-d_xltspf/conf/httpd.conf -DFOREGROUND
