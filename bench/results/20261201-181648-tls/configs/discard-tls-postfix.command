postfix -c /tmp/esmtp-bench-postfix-nkid2bzx/etc start
