postfix -c /tmp/esmtp-bench-postfix-0xx1ntgp/etc start
