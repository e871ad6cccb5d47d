postfix -c /tmp/esmtp-bench-postfix-xs573qts/etc start
