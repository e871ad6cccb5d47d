/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-wmhyv7k1/conf/httpd.conf -DFOREGROUND
