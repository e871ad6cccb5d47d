/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-5_kbx79g/conf/httpd.conf -DFOREGROUND
