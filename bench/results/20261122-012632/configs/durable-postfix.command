postfix -c /tmp/esmtp-bench-postfix-65wnktli/etc start
