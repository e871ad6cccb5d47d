/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-0ppgp1gi/conf/httpd.conf -DFOREGROUND
