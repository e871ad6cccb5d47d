postfix -c /tmp/esmtp-bench-postfix-9ow0_yk4/etc start
