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

Started by root, httpd's children need a user: the owner of the tree when
that is not root, else `nobody`. When that user cannot reach BUILDDIR/run
(a tree cloned into /root, mode 700), the default DIR is
/var/tmp/mod_esmtp-run-HASH instead; the script prints where the mail lands.
"""

import argparse
import grp
import hashlib
import os
import pwd
import shlex
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


def can_reach(path, uid, gid):
    """Whether uid/gid may traverse every existing ancestor of `path` (the
    directory itself is handed to that user by the harness)."""
    if uid == 0:
        return True
    d = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_uid == uid:
                bit = stat.S_IXUSR
            elif st.st_gid == gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        parent = os.path.dirname(d)
        if parent == d:
            return True
        d = parent


def choose_run_user():
    """As root: the tree's owner when not root, else harness's default
    (nobody). Sets harness.RUN_USER/RUN_GROUP; returns (uid, gid)."""
    owner = os.stat(harness.TOP_SRCDIR).st_uid
    if owner != 0:
        try:
            pw = pwd.getpwuid(owner)
            harness.RUN_USER = pw.pw_name
            harness.RUN_GROUP = grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            pass  # an owner without a name (a bind mount): keep nobody
    return harness.run_ids()


def default_dir(uid, gid):
    """BUILDDIR/run when the children's user can reach it, else a directory
    under /var/tmp named after the build tree."""
    preferred = os.path.join(harness.TOP_BUILDDIR, "run")
    if not harness.IS_ROOT or can_reach(preferred, uid, gid):
        return preferred
    tag = hashlib.sha1(os.path.abspath(harness.TOP_BUILDDIR).encode()).hexdigest()[:8]
    return os.path.join("/var/tmp", "mod_esmtp-run-%s" % tag)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("ESMTP_PORT", "2525")))
    ap.add_argument("--dir", default=None,
                    help="ServerRoot of the local server (default: BUILDDIR/run, or a directory under "
                         "/var/tmp when httpd's user cannot reach the build tree)")
    ap.add_argument("--handler", default="maildir Maildir",
                    help='ESMTPHandler arguments (default: "maildir Maildir", relative to --dir)')
    ap.add_argument("--mpm", default=harness.DEFAULT_MPM)
    ap.add_argument("--log-level", type=int, default=2, help="ESMTPLogLevel (default 2: commands)")
    ap.add_argument("--hostname", default="localhost", help="ServerName of the SMTP vhost")
    ap.add_argument("--config-only", action="store_true", help="write the configuration, check it, exit")
    args = ap.parse_args()

    uid, gid = choose_run_user() if harness.IS_ROOT else (os.getuid(), os.getgid())
    root = os.path.abspath(args.dir or default_dir(uid, gid))
    if harness.IS_ROOT and not can_reach(root, uid, gid):
        sys.exit("httpd's user %s cannot reach %s (a parent directory is not searchable): pick another --dir"
                 % (harness.RUN_USER, root))
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
    if harness.IS_ROOT:
        print("children:  User %s, Group %s" % (harness.RUN_USER, harness.RUN_GROUP))
    if vh.maildir:
        print("mail to:   %s/new/" % vh.maildir)
    print("logs:      %s/logs/error_log, %s/logs/esmtp.log" % (root, root))
    print("try:       swaks --server 127.0.0.1:%d --to user@localhost" % args.port)
    print("Ctrl-C stops the server.")
    sys.stdout.flush()
    os.execv(harness.HTTPD, [harness.HTTPD, "-f", conf, "-DFOREGROUND"])


if __name__ == "__main__":
    sys.exit(main())
