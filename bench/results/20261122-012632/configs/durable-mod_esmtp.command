/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-mzn1iliz/conf/httpd.conf -DFOREGROUND
