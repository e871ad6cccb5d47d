postfix -c /tmp/esmtp-bench-postfix-1du8yjyj/etc start
