#!/bin/sh
# Installs what bench/run needs on Debian/Ubuntu besides the build of
# mod_esmtp: Postfix (smtp-source, smtp-sink, the postfix programs) and
# httpd, and python3-matplotlib for the chart. Starts nothing: the Postfix package is installed with debconf's "No configuration" and with service starts denied
# (policy-rc.d) for the duration of the install; bench/run only ever starts
# private instances on 127.0.0.1.
set -eu
need=""
for prog in /usr/sbin/smtp-source /usr/sbin/smtp-sink /usr/sbin/postfix /usr/sbin/apache2; do
    [ -x "$prog" ] || need=yes
done
python3 -c 'import matplotlib' 2>/dev/null || need=yes # bench/chart
if [ -z "$need" ]; then
    echo "bench/setup.sh: everything is installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created=yes
fi
trap '[ -n "$created" ] && $SUDO rm -f "$policy"' EXIT
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y postfix apache2 python3 python3-matplotlib
echo "bench/setup.sh: done; build mod_esmtp (./quickstart.sh deps installs the build dependencies; then"
echo "autoreconf -fi && ./configure && make), then run bench/run"
