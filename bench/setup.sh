#!/bin/sh
# Installs what bench/run needs on Debian/Ubuntu besides the build of
# mod_esmtp: Postfix (smtp-source, smtp-sink, the postfix programs) and
# httpd, python3-matplotlib for the chart, and the peers of issue 13
# (bench/peers/): libnet-server-mail-perl for Perl's Net::Server::Mail,
# nodejs (+ npm) and the npm package smtp-server, installed into
# bench/peers/node_modules (not globally) from bench/peers/package-lock.json.
# Starts nothing: the Postfix package is installed with debconf's "No configuration" and with service starts denied
# (policy-rc.d) for the duration of the install; bench/run only ever starts
# private instances on 127.0.0.1.
set -eu
peers=$(cd "$(dirname "$0")/peers" && pwd)
# the npm package of the Node peer, into bench/peers/node_modules
npm_peers() {
    if [ ! -d "$peers/node_modules/smtp-server" ]; then
        (cd "$peers" && npm ci --no-audit --no-fund)
    fi
}
need=""
for prog in /usr/sbin/smtp-source /usr/sbin/smtp-sink /usr/sbin/postfix /usr/sbin/apache2; do
    [ -x "$prog" ] || need=yes
done
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need=yes # bench/chart
perl -MNet::Server::Mail::ESMTP -e 1 2>/dev/null || need=yes # bench/peers/netserver_mail.pl
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need=yes # bench/peers/smtp_server.js
if [ -z "$need" ]; then
    npm_peers
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
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y postfix apache2 python3 python3-matplotlib \
    libnet-server-mail-perl
# Node: the distribution's nodejs if there is none (smtp-server wants node >= 20); npm only when nodejs
# did not bring it (a nodejs package from elsewhere ships npm and conflicts with Debian's npm)
command -v node >/dev/null 2>&1 || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs
command -v npm >/dev/null 2>&1 || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y npm
npm_peers
echo "bench/setup.sh: done; build mod_esmtp (./quickstart.sh deps installs the build dependencies; then"
echo "autoreconf -fi && ./configure && make), then run bench/run"
