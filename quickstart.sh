#!/usr/bin/env bash
# mod_esmtp quick start.
#
#   ./quickstart.sh run [run_server.py options]   build, then run a local httpd in the
#                                                   foreground on 127.0.0.1:2525 that
#                                                   delivers into ./run/Maildir
#   ./quickstart.sh test                          build, then `make check` (installs the
#                                                   test peers: Postfix, Dovecot, HAProxy...)
#   ./quickstart.sh deps                          apt-get update + install every package (CI)
#
# Installs the Debian/Ubuntu packages it needs when some are missing (with
# sudo when not root), then runs autoreconf/configure/make as far as needed.
set -euo pipefail

cd "$(dirname "$0")"
TOP=$(pwd)

# What `run` needs: httpd and the build tools.
RUN_PACKAGES=(apache2 apache2-dev libapr1-dev libaprutil1-dev libpcre2-dev libcurl4-openssl-dev libc-ares-dev libssl-dev
              autoconf automake libtool pkg-config make g++ python3)
# What `test` needs besides: CppUnit, the clients and the peers the
# integration tests drive (`deps`, which CI uses, installs everything).
TEST_PACKAGES=(libcppunit-dev swaks curl
               python3-aiosmtpd postfix clang libclang-rt-dev libc++-dev openssl
               debhelper opendkim opendkim-tools python3-milter python3-dkim rspamd
               haproxy dovecot-core dovecot-lmtpd nginx-light libnginx-mod-mail
               pebble apache2-utils msmtp libsasl2-modules nodejs dnsmasq-base redis-server memcached
               s-nail mutt ruby libio-socket-ssl-perl libauthen-sasl-perl)
PACKAGES=("${RUN_PACKAGES[@]}")

say() { printf '==> %s\n' "$*"; }

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ] && [ "${1:-}" != force ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing packages: ${missing[*]}" >&2
        echo "this script installs them with apt-get (Debian/Ubuntu); install the equivalents by hand" >&2
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    say "installing: ${PACKAGES[*]} (missing: ${missing[*]})"
    "${sudo[@]}" apt-get update
    # postfix is only a test peer (and bench reference): keep the package from
    # configuring or starting a system-wide MTA.
    echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
    # The other peers (haproxy, dovecot, nginx, rspamd, opendkim) are started
    # privately by the tests on loopback ports: while they are installed, a
    # policy-rc.d keeps their packages from starting system-wide services
    # (nginx on port 80, dovecot on 143...), unless the machine has its own.
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# added by mod_esmtp quickstart.sh during apt-get install\nexit 101\n' \
            | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${PACKAGES[@]}" || rc=$?
    if [ "$added" = 1 ]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    return "$rc"
}

build() {
    if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
        mkdir -p build-aux m4   # a fresh checkout may lack the (ignored) aux directories
        say "autoreconf -fi"
        autoreconf -fi
    fi
    if [ ! -f Makefile ] || [ ! -f config.status ] || [ configure -nt config.status ]; then
        say "./configure"
        ./configure
    fi
    say "make"
    make -j"$(nproc 2>/dev/null || echo 2)"
}

# The logs of the tests that did not pass (automake's .trs/.log pairs).
print_failed_logs() {
    local trs log
    for trs in t/unit/*.trs t/integration/*.trs; do
        [ -f "$trs" ] || continue
        if grep -Eq '^:test-result: (FAIL|ERROR|XPASS)' "$trs"; then
            log="${trs%.trs}.log"
            echo
            echo "==================== $log"
            cat "$log" 2>/dev/null || echo "(no log)"
        fi
    done
}

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    deps)
        PACKAGES+=("${TEST_PACKAGES[@]}")
        install_packages force
        ;;
    run)
        install_packages
        build
        say "starting httpd (Ctrl-C stops it)"
        exec /usr/bin/python3 "$TOP/t/integration/run_server.py" "$@"
        ;;
    test)
        PACKAGES+=("${TEST_PACKAGES[@]}")
        install_packages
        build
        say "make check"
        status=0
        make -j"$(nproc 2>/dev/null || echo 2)" check || status=$?
        if [ "$status" -ne 0 ]; then
            print_failed_logs
            echo
            echo "make check failed (status $status)"
        fi
        exit "$status"
        ;;
    *)
        usage
        ;;
esac
