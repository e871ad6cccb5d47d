/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-802yja0o/conf/httpd.conf -DFOREGROUND
