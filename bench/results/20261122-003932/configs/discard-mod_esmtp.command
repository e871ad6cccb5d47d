/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-g_q5616b/conf/httpd.conf -DFOREGROUND
