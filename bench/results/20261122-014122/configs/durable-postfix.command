postfix -c /tmp/esmtp-bench-postfix-7t6v_9ip/etc start
