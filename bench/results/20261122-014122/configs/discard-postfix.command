postfix -c /tmp/esmtp-bench-postfix-0kwg9wkz/etc start
