postfix -c /tmp/esmtp-bench-postfix-fflig0ny/etc start
