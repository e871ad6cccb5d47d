/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-ytjyf2mx/conf/httpd.conf -DFOREGROUND
