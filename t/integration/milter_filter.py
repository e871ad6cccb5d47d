#!/usr/bin/python3
"""A mail filter written with python3-milter (Debian's binding of the real
libmilter), for test_milter.py: every reply and every modification, chosen
by the recipient's local part or the Subject.

    milter_filter.py SOCKET REPORTFILE

RCPT local part: reject -> REJECT, tempfail -> TEMPFAIL, multiline ->
REPLYCODE with a three-line text, accept -> ACCEPT (no more filtering of
the message), discard -> DISCARD.
Subject (at end of message): "modify" -> every modification, "discard" ->
DISCARD, "eomreject" -> REPLYCODE at end of message, "slow" -> five
PROGRESS one second apart, then CONTINUE, "skip" -> SKIP at the first body
chunk, "report" -> a header X-Report with the macros and headers the filter
saw. Every end of message appends one line of JSON to REPORTFILE.
"""

import json
import sys
import time

import Milter


class Filter(Milter.Base):
    def __init__(self):
        self.headers = []
        self.macros = {}
        self.bodydata = b""
        self.subject = ""
        self.body_calls = 0

    def _macros(self, names):
        for n in names:
            v = self.getsymval(n)
            if v is not None:
                self.macros[n] = v

    def connect(self, hostname, family, hostaddr):
        self.client = (hostname, hostaddr[0] if hostaddr else None)
        self._macros(["j", "_", "{daemon_name}", "{client_addr}", "{client_port}", "{client_name}"])
        return Milter.CONTINUE

    def hello(self, name):
        self.helo = name
        self._macros(["{tls_version}", "{cipher}"])
        return Milter.CONTINUE

    def envfrom(self, f, *args):
        self.headers = []
        self.bodydata = b""
        self.subject = ""
        self.body_calls = 0
        self.mailfrom = f
        self.rcpts = []
        self._macros(["i", "{mail_addr}"])
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        self._macros(["{rcpt_addr}"])
        local = to.strip("<>").split("@")[0]
        if local == "reject":
            return Milter.REJECT
        if local == "tempfail":
            return Milter.TEMPFAIL
        if local == "multiline":
            self.setreply("550", "5.7.1", "first line of three", "second line", "third line")
            return Milter.REJECT
        if local == "accept":
            return Milter.ACCEPT
        if local == "discard":
            return Milter.DISCARD
        self.rcpts.append(to)
        return Milter.CONTINUE

    def header(self, name, value):
        self.headers.append([name, value])
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def body(self, chunk):
        self.body_calls += 1
        self.bodydata += chunk
        if "skip" in self.subject:
            return Milter.SKIP
        return Milter.CONTINUE

    def eom(self):
        s = self.subject
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"subject": s, "macros": self.macros, "headers": self.headers,
                                "body": self.bodydata.decode("latin-1"), "body_calls": self.body_calls,
                                "helo": self.helo, "from": self.mailfrom, "rcpts": self.rcpts}) + "\n")
        if "discard" in s:
            return Milter.DISCARD
        if "eomreject" in s:
            self.setreply("554", "5.7.1", "rejected at end of message by the filter")
            return Milter.REJECT
        if "slow" in s:
            for _ in range(5):
                time.sleep(1.0)
                self.progress()
        if "modify" in s:
            self.addheader("X-Milter-Added", "added value")
            self.addheader("X-Milter-Inserted", "at the top", 0)
            self.chgheader("Subject", 1, "modify: changed by the filter")
            self.chgheader("X-Remove-Me", 1, "")
            self.replacebody(b"replaced body\r\nsecond line\r\n")
            self.addrcpt("<added@smtp.test>")
            self.addrcpt("<addedpar@smtp.test>", "NOTIFY=NEVER")
            self.delrcpt("<modify@smtp.test>")
            self.chgfrom("<newsender@example.net>", "BODY=8BITMIME")
            self.quarantine("suspicious content")
        if "report" in s:
            self.addheader("X-Report", json.dumps({"macros": self.macros, "headers": self.headers}))
        return Milter.CONTINUE


if __name__ == "__main__":
    Milter.factory = Filter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.ADDRCPT | Milter.ADDRCPT_PAR
                     | Milter.DELRCPT | Milter.CHGFROM | Milter.QUARANTINE)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Milter.runmilter("esmtptest", sys.argv[1], 60)
