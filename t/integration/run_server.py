#!/usr/bin/python3
"""Run mod_esmtp from the build tree in a local httpd, in the foreground.

    t/integration/run_server.py [--port 2525] [--dir BUILDDIR/run]
                                [--handler "maildir Maildir"] [--mpm event]
                                [--log-level 2] [--config-only]

Writes DIR/conf/httpd.conf with the generator the integration tests use
(harness.py): ServerRoot DIR, `Listen 127.0.0.1:PORT smtp`, mail delivered
into DIR/Maildir/new, transaction log DIR/logs/esmtp.log, error log
DIR/logs/error_log. Then replaces itself with `apache2 -f ... -DFOREGROUND`:
Ctrl-C stops the server. Used by `./quickstart.sh run` and `make run`.
"""

import argparse
import os
import shlex
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("ESMTP_PORT", "2525")))
    ap.add_argument("--dir", default=os.path.join(harness.TOP_BUILDDIR, "run"),
                    help="ServerRoot of the local server (default: BUILDDIR/run)")
    ap.add_argument("--handler", default="maildir Maildir",
                    help='ESMTPHandler arguments (default: "maildir Maildir", relative to --dir)')
    ap.add_argument("--mpm", default=harness.DEFAULT_MPM)
    ap.add_argument("--log-level", type=int, default=2, help="ESMTPLogLevel (default 2: commands)")
    ap.add_argument("--hostname", default="localhost", help="ServerName of the SMTP vhost")
    ap.add_argument("--config-only", action="store_true", help="write the configuration, check it, exit")
    args = ap.parse_args()

    root = os.path.abspath(args.dir)
    os.makedirs(root, exist_ok=True)
    for path in (harness.MOD_ESMTP,):
        if not os.path.exists(path):
            sys.exit("%s is not built: run `make` first" % path)

    handler = shlex.split(args.handler)
    if handler and handler[0] == "maildir" and len(handler) == 2 and not os.path.isabs(handler[1]):
        handler[1] = os.path.join(root, handler[1])
    test_handler = bool(handler) and handler[0] == "test"

    httpd = harness.Httpd(mpm=args.mpm, root=root, test_handler=test_handler)
    vh = httpd.add_smtp(handler, port=args.port, server_name=args.hostname,
                        log_file="esmtp.log", log_level=args.log_level)
    if handler and handler[0] == "maildir":
        vh.maildir = handler[1]
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(vh.maildir, sub), exist_ok=True)
    conf = httpd.write_config()

    rc, out = httpd.config_test()
    if rc != 0:
        sys.exit("configuration %s is not valid:\n%s" % (conf, out))
    if args.config_only:
        print(out.strip())
        print(conf)
        return 0

    if args.port in harness.listening_ports():
        sys.exit("port %d is already in use on this host (another server? --port N picks another)" % args.port)

    print("mod_esmtp: %s" % harness.MOD_ESMTP)
    print("config:    %s" % conf)
    print("listening: 127.0.0.1:%d (handler: %s)" % (args.port, " ".join(handler)))
    if vh.maildir:
        print("mail to:   %s/new/" % vh.maildir)
    print("logs:      %s/logs/error_log, %s/logs/esmtp.log" % (root, root))
    print("try:       swaks --server 127.0.0.1:%d --to user@localhost" % args.port)
    print("Ctrl-C stops the server.")
    sys.stdout.flush()
    os.execv(harness.HTTPD, [harness.HTTPD, "-f", conf, "-DFOREGROUND"])


if __name__ == "__main__":
    sys.exit(main())
