#!/usr/bin/python3
"""Writes the seed corpus of the libFuzzer targets into t/fuzz/corpus/<target>/.

    t/fuzz/make_corpus.py [DIR]      (default: the corpus/ next to this script)

Input layouts (see the targets):
    fuzz_command  [flags] [n] [size_1..size_n] client bytes
    fuzz_data     [flags] [limits] [n] [size_1..size_n] message bytes after DATA
    fuzz_address  [flags] text
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# fuzz_command flags
NORMALIZE, FORBID_PIPELINING, SMALL_LIMITS, FEW_EXT, NOISY, THROW, OWN_DOMAINS, SHUTDOWN = (1 << i for i in range(8))


def chunked(payload, sizes=()):
    sizes = list(sizes)[:15]
    return bytes([len(sizes)] + [s & 0xFF for s in sizes]) + payload


def lines_split(payload):
    """Split sizes that cut the payload at every line end (first 15 lines)."""
    sizes, last = [], 0
    for i, b in enumerate(payload):
        if b == 0x0A and len(sizes) < 15:
            size = i + 1 - last
            if size > 255:
                break
            sizes.append(size)
            last = i + 1
    return sizes


def crlf(*lines):
    return b"".join(l + b"\r\n" for l in lines)


MESSAGE = crlf(b"From: Alice <alice@example.org>", b"To: Bob <bob@example.org>", b"Subject: hello",
               b"Message-ID: <1@example.org>", b"", b"Hello Bob.", b"..a stuffed dot", b"", b"Bye.")

SESSION = crlf(b"EHLO client.example", b"MAIL FROM:<alice@example.org> SIZE=200", b"RCPT TO:<bob@example.org>",
               b"DATA") + MESSAGE + crlf(b".", b"QUIT")


def command_corpus():
    c = {}
    c["session"] = bytes([0]) + chunked(SESSION)
    c["session_by_line"] = bytes([0]) + chunked(SESSION, lines_split(SESSION))
    helo = crlf(b"HELO client.example", b"MAIL FROM:<>", b"RCPT TO:<postmaster>", b"DATA") + crlf(
        b"Subject: bounce", b"", b"x") + crlf(b".", b"QUIT")
    c["helo_one_by_one"] = bytes([FORBID_PIPELINING]) + chunked(helo, lines_split(helo))
    c["helo_pipelined_forbidden"] = bytes([FORBID_PIPELINING]) + chunked(helo)
    pipelined = crlf(b"EHLO c.example", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>",
                     b"RCPT TO:<c@example.org>", b"DATA") + crlf(b"Subject: one", b"", b"first") + crlf(
        b".", b"MAIL FROM:<a@example.org> BODY=8BITMIME", b"RCPT TO:<d@example.org>", b"DATA") + crlf(
        b"Subject: two", b"", b"second") + crlf(b".", b"RSET", b"NOOP", b"QUIT")
    c["pipelined_two_transactions"] = bytes([0]) + chunked(pipelined, [7, 1, 30, 200, 3])
    bdat = crlf(b"EHLO c.example", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>", b"BDAT 20") + \
        b"Subject: x\r\n\r\nbody\r\n" + b"BDAT 6 LAST\r\n" + b"more\r\n" + crlf(
        b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>", b"BDAT 0 LAST", b"BDAT 3", b"QUIT")
    c["bdat"] = bytes([0]) + chunked(bdat, [20, 40, 5])
    smuggle = crlf(b"EHLO c.example", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>", b"DATA") + \
        b"Subject: smuggle\r\n\r\nx\n.\nMAIL FROM:<evil@example.org>\r\n" + \
        b"y\r\n.\nRCPT TO:<victim@example.org>\r\nz\n.\r\nDATA\r\n.\r\r\n\r.\r" + crlf(b"", b".", b"QUIT")
    c["smuggling"] = bytes([0]) + chunked(smuggle)
    c["smuggling_normalize"] = bytes([NORMALIZE]) + chunked(smuggle, [60, 1, 1, 1, 40])
    hostile = crlf(b"EHLO [192.0.2.1]", b"MAIL FROM:<@a.example,@b.example:alice@example.org> SIZE=1 BODY=7BIT",
                   b"RCPT TO:<\"quoted \\\" local\"@example.org>", b"RCPT TO:<user@[IPv6:2001:db8::1]>",
                   b"RCPT TO:<user@[127.0.0.1]>", b"RCPT TO:<relay@elsewhere.example>",
                   b"RCPT TO:<a@b> NOTIFY=NEVER", b"MAIL FROM:<a@b@c>", b"RCPT TO:<PostMaster>",
                   b"RCPT TO:<@:x@y>", b"MAIL FROM: <spaces@example.org>", b"RCPT TO:<x@d1>", b"RSET",
                   b"MAIL FROM:<x@example.org> SIZE=99999999999999999999", b"VRFY", b"EXPN list", b"QUIT")
    c["hostile_addresses"] = bytes([OWN_DOMAINS]) + chunked(hostile)
    long_lines = crlf(b"EHLO " + b"h" * 600, b"NOOP " + b"n" * 70, b"EHLO c.example", b"MAIL FROM:<a@example.org>",
                      b"RCPT TO:<b@example.org>", b"DATA") + crlf(b"Subject: " + b"s" * 1100, b"",
                                                                    b"." + b"d" * 999) + crlf(b".", b"QUIT")
    c["long_lines"] = bytes([0]) + chunked(long_lines, [100, 250, 255])
    c["long_lines_small_limits"] = bytes([SMALL_LIMITS | SHUTDOWN]) + chunked(long_lines[:700])
    utf8 = crlf("EHLO clïent.example".encode(), "MAIL FROM:<ålice@exämple.org> SMTPUTF8".encode(),
                "RCPT TO:<bøb@example.org>".encode(), b"DATA") + crlf(
        "Subject: =?UTF-8?Q?h=C3=A9?= héllo".encode(), b"", "Grüße ✉ \U0001F600".encode(),
        b"\xc0\xaf\xed\xa0\x80 invalid") + crlf(b".", "RCPT TO:<nö@example.org>".encode(), b"QUIT")
    c["utf8"] = bytes([0]) + chunked(utf8, [3, 3, 3])
    noisy = crlf(b"HELP", b"EHLO x-ray.example", b"XFUZZ", b"XFUZZ arg", b"VRFY bob", b"EXPN staff", b"NOOP",
                 b"MAIL FROM:<throw@example.org>", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>",
                 b"RCPT TO:<c@example.org>", b"DATA") + crlf(b"X-Throw: yes", b"Subject: s", b"", b"b") + crlf(
        b".", b"RSET", b"HELO mm.example", b"QUIT")
    c["noisy_handler"] = bytes([NOISY | THROW]) + chunked(noisy, [10, 10])
    c["throwing_handler"] = bytes([THROW]) + chunked(noisy)
    c["http_request"] = bytes([0]) + chunked(b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n")
    c["tls_clienthello"] = bytes([0]) + chunked(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    junk = crlf(b"EHLO c.example") + b"NOOP\n" + b"RSET\r" + b"\r\n" + b"MA\x00IL FROM:<a@b>\r\n" + \
        b"mail from:<a@example.org>\r\nrcpt to:<b@example.org>\r\ndata\r\nx\r\n.\r\n" + crlf(
        b"", b"   ", b"FOO bar", b"QUIT")
    c["bare_lf_nul_case"] = bytes([SMALL_LIMITS]) + chunked(junk, [1, 2, 3, 4, 5])
    # STARTTLS On (and Required with SMALL_LIMITS) with a stand-in certificate:
    # 454 to STARTTLS, plaintext mail (On) or 454 to MAIL (Required)
    unavailable = crlf(b"EHLO c.example", b"STARTTLS", b"HELP", b"MAIL FROM:<a@example.org>",
                       b"RCPT TO:<b@example.org>", b"DATA") + crlf(b"Subject: s", b"", b"b") + crlf(b".", b"QUIT")
    c["starttls_unavailable"] = bytes([OWN_DOMAINS | FEW_EXT]) + chunked(unavailable, [16, 10])
    c["starttls_unavailable_required"] = bytes([OWN_DOMAINS | FEW_EXT | SMALL_LIMITS]) + chunked(unavailable)
    reject_then_rset = crlf(b"EHLO c.example", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>",
                            b"DATA") + b"Subject: bare\r\n\r\nbare\nLF\r\n.\r\n" + crlf(
        b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>", b"RSET", b"QUIT")
    c["rejected_message_then_rset"] = bytes([0]) + chunked(reject_then_rset)
    # AUTH (issue 10): PLAIN with an initial response, LOGIN's exchange,
    # a cancel, a deferred answer with pipelined commands, then relaying
    auth = crlf(b"EHLO c.example", b"AUTH PLAIN AHVzZXIAd3Jvbmc=", b"AUTH LOGIN", b"*", b"AUTH LOGIN dXNlcg==",
                b"d3Jvbmc=", b"AUTH PLAIN", b"AHVzZXIAWnE5LXNlY3JldA==", b"MAIL FROM:<user@example.org> AUTH=<>",
                b"RCPT TO:<x@elsewhere.example>", b"DATA") + MESSAGE + crlf(b".", b"QUIT")
    c["auth"] = bytes([0]) + chunked(auth, lines_split(auth))
    c["auth_whole"] = bytes([NORMALIZE]) + chunked(auth)
    later = crlf(b"EHLO c.example", b"AUTH PLAIN AGxhdGVyAFpxOS1zZWNyZXQ=", b"MAIL FROM:<later@example.org>",
                 b"RCPT TO:<x@elsewhere.example>", b"AUTH PLAIN AGRvd24AWnE5LXNlY3JldA==", b"QUIT")
    c["auth_deferred"] = bytes([0]) + chunked(later)
    c["auth_submission_tls"] = bytes([NOISY | OWN_DOMAINS]) + chunked(auth)
    return c


def data_corpus():
    c = {}
    c["message"] = bytes([0, 0]) + chunked(MESSAGE + b".\r\n")
    c["message_by_line"] = bytes([0, 0]) + chunked(MESSAGE + b".\r\n", lines_split(MESSAGE))
    folded = crlf(b"Subject: a folded", b"  subject line", b"\tand more", b"X-Empty:", b"X-Colon:: x",
                  b"Not a header line", b"Body: looks like a header") + b".\r\n"
    c["folded_headers"] = bytes([0, 0]) + chunked(folded, [20, 1, 1])
    c["no_header_section"] = bytes([0, 0]) + chunked(b" leading space\r\nx\r\n.\r\n")
    c["empty_message"] = bytes([0, 0]) + chunked(b".\r\n")
    c["end_marker_split"] = bytes([0, 0]) + chunked(b"a\r\n.\r\n", [1, 1, 1, 1, 1, 1])
    c["smuggling"] = bytes([0, 0]) + chunked(
        b"S: x\r\n\r\nx\n.\ny\r\n.\nz\n.\r\n\r.\r\r\n.\r\r\n..\r\n.x\r\n.\r\n")
    c["smuggling_normalize"] = bytes([1, 0]) + chunked(b"S: x\n\r\n\r\nx\n.\ny\r\n.\nz\n.\r\n\r.\r\r\n.\r\n",
                                                       [3, 3, 3, 3])
    c["long_lines"] = bytes([0, 0]) + chunked(b"S: " + b"s" * 1200 + b"\r\n\r\n" + b"x" * 998 + b"\r\n" +
                                              b"." + b"y" * 999 + b"\r\n.\r\n", [255, 255, 255])
    c["small_limits"] = bytes([2, 17]) + chunked(
        crlf(b"Subject: a header too big for the limit", b" folded on", b"To: b", b"", b"body line") + b".\r\n")
    c["bdat_like_no_end"] = bytes([0, 0]) + chunked(b"Subject: x\r\n\r\nno end of data, no CRLF", [5])
    c["utf8_binary"] = bytes([0, 0]) + chunked(
        "Subject: Grüße\r\n\r\n✉ \u00e9\r\n".encode() + b"\x00\xff\xfe\r\n\xf0\x9f\x98\x80\r\n.\r\n", [2, 7])
    return c


def address_corpus():
    texts = [
        (3, b"<alice@example.org> SIZE=100 BODY=8BITMIME"),
        (1, b"<>"),
        (2, b"<postmaster>"),
        (0, b"<@a.example,@[192.0.2.1]:user@c.example>"),
        (0, b'<"quoted \\" local@"@example.org> SMTPUTF8'),
        (0, b"<user@[192.0.2.1]>"),
        (0, b"<user@[IPv6:2001:db8::1]>"),
        (0, b"[IPv6:::ffff:192.0.2.1]"),
        (0, "<üser@exämple.org> SMTPUTF8".encode()),
        (0, b"user@" + b"l" * 64 + b".example"),
        (0, b"a.b-c@d-e.f.example"),
        (0, b"\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80@x"),
        (0, "\U0001F600@\u00e9.example".encode()),
        (0, b"1:2:3:4:5:6:7::"),
        (0, b"<a@b> KEY= =V X=1=2  TRAILING "),
    ]
    return {"addr%02d" % i: bytes([f]) + t for i, (f, t) in enumerate(texts)}


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    for target, files in (("fuzz_command", command_corpus()), ("fuzz_data", data_corpus()),
                          ("fuzz_address", address_corpus())):
        d = os.path.join(top, target)
        os.makedirs(d, exist_ok=True)
        for name, content in files.items():
            assert len(content) <= 4096, name
            with open(os.path.join(d, name), "wb") as f:
                f.write(content)
        print("%s: %d files" % (d, len(files)))


if __name__ == "__main__":
    main()
