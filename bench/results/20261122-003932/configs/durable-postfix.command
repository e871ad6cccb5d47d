postfix -c /tmp/esmtp-bench-postfix-o2vsfmb2/etc start
