/usr/sbin/apache2 -f /tmp/esmtp-bench-httpd-pdfz_1a1/conf/httpd.conf -DFOREGROUND
