postfix -c /tmp/esmtp-bench-postfix-xq_25jnp/etc start
