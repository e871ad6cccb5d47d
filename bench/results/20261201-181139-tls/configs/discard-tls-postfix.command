postfix -c /tmp/esmtp-bench-postfix-8ike54rc/etc start
