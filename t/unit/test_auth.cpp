// SMTP AUTH in the engine (issue 10): base64 and the PLAIN message
// (engine/auth.cpp), and the AUTH verb in the session: mechanisms, 334
// exchanges, cancel, the RFC 4954 replies, the failure limit, an
// Authenticator that answers later, submission, relay, the sender/login
// match, Received: keywords and passwords kept out of the log.

#include "engine/auth.hpp"
#include "engine/address.hpp"
#include "engine/sender_login.hpp"
#include "session_harness.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <map>
#include <optional>
#include <string>

using esmtp::AuthVerdict;
using esmtp::Credentials;
using esmtp::SaslError;
using esmtp::test::Harness;

namespace
{

bool has(const std::string &out, const std::string &what)
{
    return out.find(what) != std::string::npos;
}

std::string b64(std::string_view s)
{
    return esmtp::base64_encode(s);
}

std::string plain(std::string_view authzid, std::string_view user, std::string_view pw)
{
    std::string m(authzid);
    m.push_back('\0');
    m.append(user);
    m.push_back('\0');
    m.append(pw);
    return b64(m);
}

// Users and passwords; answers now, or later when `defer` is set.
struct FakeAuth final : esmtp::Authenticator {
    std::map<std::string, std::string> users{{"alice@example.org", "s3cret-pw"}, {"bob", "hunter2-pw"}};
    bool defer = false;
    bool down = false;
    bool busy = false;
    int calls = 0;
    std::string last_user;
    std::optional<AuthVerdict> pending;
    std::optional<AuthVerdict> check(const esmtp::AuthRequest &r) override
    {
        ++calls;
        last_user = std::string(r.user);
        if (busy)
            return AuthVerdict::busy;
        AuthVerdict v = down                                                       ? AuthVerdict::unavailable
                        : users.count(last_user) && users[last_user] == r.password ? AuthVerdict::granted
                                                                                   : AuthVerdict::denied;
        if (defer) {
            pending = v;
            return std::nullopt;
        }
        return v;
    }
};

esmtp::TlsInfo tls13()
{
    esmtp::TlsInfo t;
    t.active = true;
    t.protocol = "TLSv1.3";
    t.cipher = "TLS_AES_256_GCM_SHA384";
    t.bits = t.alg_bits = 256;
    return t;
}

// A session over TLS with AUTH PLAIN LOGIN and the fake authenticator.
struct AuthHarness : Harness {
    FakeAuth auth;
    AuthHarness(bool tls = true)
    {
        cfg.auth_mechanisms = esmtp::mech_plain | esmtp::mech_login;
        cfg.log_level = 3;
        conn.tls = tls;
        if (tls)
            conn.tls_info = tls13();
    }
    std::string begin()
    {
        start();
        session->set_authenticator(&auth);
        return send("EHLO client.example\r\n");
    }
};

} // namespace

class AuthTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(AuthTest);
    CPPUNIT_TEST(testBase64);
    CPPUNIT_TEST(testPlainMessage);
    CPPUNIT_TEST(testMechanismNames);
    CPPUNIT_TEST(testOffIsUnknownCommand);
    CPPUNIT_TEST(testAdvertisedOnlyOverTls);
    CPPUNIT_TEST(testPlainInitialResponse);
    CPPUNIT_TEST(testPlainContinuation);
    CPPUNIT_TEST(testLoginExchange);
    CPPUNIT_TEST(testLoginPhases);
    CPPUNIT_TEST(testCancelAndBadBase64);
    CPPUNIT_TEST(testSequencing);
    CPPUNIT_TEST(testBadPlainMessages);
    CPPUNIT_TEST(testProxyUsers);
    CPPUNIT_TEST(testFailureLimit);
    CPPUNIT_TEST(testUnavailable);
    CPPUNIT_TEST(testBusy);
    CPPUNIT_TEST(testDeferredHoldsInput);
    CPPUNIT_TEST(testPlaintextWhenAllowed);
    CPPUNIT_TEST(testPasswordNeverLogged);
    CPPUNIT_TEST(testSubmissionAndRelay);
    CPPUNIT_TEST(testSenderLoginMatch);
    CPPUNIT_TEST(testSenderLoginMapFile);
    CPPUNIT_TEST(testSenderLoginMapSession);
    CPPUNIT_TEST(testCanonicalMailbox);
    CPPUNIT_TEST(testAuthParameterOnMail);
    CPPUNIT_TEST(testResponseTooLong);
    CPPUNIT_TEST(testSmtpUtf8Keyword);
    CPPUNIT_TEST(testStartTlsForgetsAuth);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testBase64()
    {
        std::string out;
        for (const std::string &s :
             std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
            CPPUNIT_ASSERT(esmtp::base64_decode(b64(s), out));
            CPPUNIT_ASSERT(out == s);
        }
        CPPUNIT_ASSERT_EQUAL(std::string("AGFsaWNlAHB3"), plain("", "alice", "pw"));
        for (const char *bad : {"A", "AB", "ABC", "AB=A", "A===", "=AAA", "AB=CAAAA", "AA AA", "AAA*",
                                "QQ==QQ==", "QR==", "QUJ="}) // the last two: non-zero bits in the padding
            CPPUNIT_ASSERT_MESSAGE(bad, !esmtp::base64_decode(bad, out));
        CPPUNIT_ASSERT(esmtp::base64_decode("QQ==", out) && out == "A");
        CPPUNIT_ASSERT(esmtp::base64_decode("QUI=", out) && out == "AB");
    }

    void testPlainMessage()
    {
        auto parse = [](std::string_view m, Credentials &c) { return esmtp::parse_plain(m, c); };
        Credentials c;
        CPPUNIT_ASSERT(parse(std::string("\0alice\0pw", 9), c) == SaslError::ok);
        CPPUNIT_ASSERT_EQUAL(std::string("alice"), c.user);
        CPPUNIT_ASSERT_EQUAL(std::string("pw"), c.password);
        CPPUNIT_ASSERT(parse(std::string("alice\0alice\0pw", 14), c) == SaslError::ok);
        CPPUNIT_ASSERT(parse(std::string("root\0alice\0pw", 13), c) == SaslError::authzid);
        CPPUNIT_ASSERT(parse("alicepw", c) == SaslError::malformed);
        CPPUNIT_ASSERT(parse(std::string("\0alice", 6), c) == SaslError::malformed);
        CPPUNIT_ASSERT(parse(std::string("\0alice\0pw\0x", 11), c) == SaslError::malformed);
        CPPUNIT_ASSERT(parse(std::string("\0\0pw", 4), c) == SaslError::malformed);
        CPPUNIT_ASSERT(parse(std::string("\0alice\0", 7), c) == SaslError::malformed);
        CPPUNIT_ASSERT(parse(std::string("\0al\xff"
                                         "ce\0pw",
                                         9),
                             c) == SaslError::bad_user);
        CPPUNIT_ASSERT(parse(std::string("\0al\tce\0pw", 9), c) == SaslError::bad_user);
        CPPUNIT_ASSERT(parse(std::string("\0j\xc3\xb6rg\0pw", 9), c) == SaslError::ok);
        CPPUNIT_ASSERT(parse(std::string("\0alice\0", 7) + std::string(256, 'x'), c) == SaslError::too_long);
        CPPUNIT_ASSERT(parse(std::string("\0", 1) + std::string(256, 'u') + std::string("\0pw", 3), c) ==
                       SaslError::bad_user);
        c.password = "secret";
        c.wipe();
        CPPUNIT_ASSERT(c.password.empty());
    }

    void testMechanismNames()
    {
        CPPUNIT_ASSERT_EQUAL(unsigned(esmtp::mech_plain), esmtp::auth_mechanism_by_name("plain"));
        CPPUNIT_ASSERT_EQUAL(unsigned(esmtp::mech_login), esmtp::auth_mechanism_by_name("LOGIN"));
        CPPUNIT_ASSERT_EQUAL(0u, esmtp::auth_mechanism_by_name("CRAM-MD5"));
        CPPUNIT_ASSERT_EQUAL(std::string("PLAIN LOGIN"), esmtp::auth_mechanism_list(3));
    }

    void testOffIsUnknownCommand()
    {
        Harness h;
        h.ehlo();
        std::string ehlo = h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT(!has(ehlo, "AUTH"));
        h.send("AUTH PLAIN " + plain("", "alice", "pw") + "\r\n");
        CPPUNIT_ASSERT(h.rec->saw("unknown"));
        CPPUNIT_ASSERT(h.s().auth_user().empty());
    }

    void testAdvertisedOnlyOverTls()
    {
        AuthHarness plaintext(false);
        std::string ehlo = plaintext.begin();
        CPPUNIT_ASSERT_MESSAGE(ehlo, !has(ehlo, "AUTH"));
        CPPUNIT_ASSERT_EQUAL(std::string("538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
                             plaintext.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, plaintext.auth.calls);
        CPPUNIT_ASSERT(!has(plaintext.send("HELP\r\n"), "AUTH"));

        AuthHarness h;
        ehlo = h.begin();
        CPPUNIT_ASSERT_MESSAGE(ehlo, has(ehlo, "250-AUTH PLAIN LOGIN\r\n") || has(ehlo, "250 AUTH PLAIN LOGIN\r\n"));
        CPPUNIT_ASSERT(has(h.send("HELP\r\n"), " AUTH"));
        h.cfg.auth_mechanisms = esmtp::mech_login;
        CPPUNIT_ASSERT(has(h.send("EHLO again\r\n"), "AUTH LOGIN\r\n"));

        // ESMTPStartTLS Required: the verb table's needs_tls column first
        AuthHarness req(false);
        req.cfg.starttls = esmtp::StartTls::required;
        req.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("530 5.7.0 Must issue a STARTTLS command first\r\n"),
                             req.send("AUTH LOGIN\r\n"));
    }

    void testPlainInitialResponse()
    {
        AuthHarness h;
        h.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             h.send("AUTH PLAIN " + plain("", "alice@example.org", "s3cret-pw") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("alice@example.org"), std::string(h.s().auth_user()));
        CPPUNIT_ASSERT_EQUAL(std::string("ESMTPSA"), std::string(h.s().protocol()));
        CPPUNIT_ASSERT(h.log.has("AUTH PLAIN user=alice@example.org: authenticated"));
        std::string trace;
        auto r = h.transaction("alice@example.org", {"someone@elsewhere.example"}, "Subject: x\r\n\r\nhi\r\n", &trace);
        CPPUNIT_ASSERT_MESSAGE(r.back(), r.back().rfind("250 ", 0) == 0);
        CPPUNIT_ASSERT_MESSAGE(trace, has(trace, "with ESMTPSA"));
        CPPUNIT_ASSERT(h.log.has("user=alice@example.org"));
        // authzid equal to the user is the same as none
        AuthHarness z;
        z.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             z.send("auth plain " + plain("bob", "bob", "hunter2-pw") + "\r\n"));
    }

    void testPlainContinuation()
    {
        AuthHarness h;
        h.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("334 \r\n"), h.send("AUTH PLAIN\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::sasl);
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             h.send(plain("", "bob", "hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::command);
        // "=": an empty initial response, which PLAIN cannot be
        AuthHarness e;
        e.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.2 Invalid PLAIN response: [authzid] NUL user NUL password\r\n"),
                             e.send("AUTH PLAIN =\r\n"));
    }

    void testLoginExchange()
    {
        AuthHarness h;
        h.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("334 VXNlcm5hbWU6\r\n"), h.send("AUTH LOGIN\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("334 UGFzc3dvcmQ6\r\n"), h.send(b64("bob") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             h.send(b64("hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("bob"), std::string(h.s().auth_user()));
        // the user name as initial response
        AuthHarness i;
        i.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("334 UGFzc3dvcmQ6\r\n"), i.send("AUTH LOGIN " + b64("bob") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("535 5.7.8 Error: authentication failed\r\n"), i.send(b64("wrong") + "\r\n"));
        CPPUNIT_ASSERT(i.s().auth_user().empty());
        // a non-UTF-8 user name is refused before any provider sees it
        AuthHarness u;
        u.begin();
        u.send("AUTH LOGIN\r\n");
        CPPUNIT_ASSERT_EQUAL(
            std::string("501 5.5.2 Invalid user name: UTF-8 without control characters, at most 255 octets\r\n"),
            u.send(b64("b\xe9la") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, u.auth.calls);
    }

    // Issue 20: LOGIN's second step (the password) is a phase of its own,
    // entered through transit(), not a flag beside Phase::sasl.
    void testLoginPhases()
    {
        AuthHarness h;
        h.begin();
        h.send("AUTH LOGIN\r\n");
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::sasl);
        CPPUNIT_ASSERT_EQUAL(std::string("334 UGFzc3dvcmQ6\r\n"), h.send(b64("bob") + "\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::sasl_password);
        CPPUNIT_ASSERT(h.log.has("transit [AUTH LOGIN user] sasl/ehlo/none -> sasl_password/ehlo/none"));
        // "*" cancels the password step as it cancels the first
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.7.0 Authentication aborted\r\n"), h.send("*\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::command);
        // a new AUTH LOGIN asks for the user name again
        CPPUNIT_ASSERT_EQUAL(std::string("334 VXNlcm5hbWU6\r\n"), h.send("AUTH LOGIN\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("334 UGFzc3dvcmQ6\r\n"), h.send(b64("bob") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             h.send(b64("hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::command);
    }

    void testCancelAndBadBase64()
    {
        AuthHarness h;
        h.begin();
        h.send("AUTH LOGIN\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.7.0 Authentication aborted\r\n"), h.send("*\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::command);
        h.send("AUTH PLAIN\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.2 Cannot decode response\r\n"), h.send("not base64!\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.2 Cannot decode response\r\n"), h.send("AUTH PLAIN AGFsaWN\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("504 5.5.4 Unsupported authentication mechanism\r\n"),
                             h.send("AUTH CRAM-MD5\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
                             h.send("AUTH\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
                             h.send("AUTH PLAIN abcd efgh\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, h.auth.calls);
        // none of these counted as a failed authentication
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n"));
    }

    void testSequencing()
    {
        AuthHarness h;
        h.start();
        h.s().set_authenticator(&h.auth);
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: send HELO/EHLO first\r\n"), h.send("AUTH LOGIN\r\n"));
        h.send("HELO client.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("503 Error: send EHLO first\r\n"), h.send("AUTH LOGIN\r\n"));
        h.send("EHLO client.example\r\n");
        h.send("MAIL FROM:<x@example.com>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: MAIL transaction in progress\r\n"),
                             h.send("AUTH LOGIN\r\n"));
        h.send("RSET\r\n");
        h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("503 5.5.1 Error: already authenticated\r\n"), h.send("AUTH LOGIN\r\n"));
        // EHLO again keeps the authentication (RFC 4954 4)
        h.send("EHLO client.example\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("bob"), std::string(h.s().auth_user()));
    }

    void testBadPlainMessages()
    {
        AuthHarness h;
        h.cfg.max_auth_failures = 10;
        h.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.2 Invalid PLAIN response: [authzid] NUL user NUL password\r\n"),
                             h.send("AUTH PLAIN " + b64("bob hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.2 Invalid PLAIN response: [authzid] NUL user NUL password\r\n"),
                             h.send("AUTH PLAIN " + b64(std::string("\0bob\0hunter2-pw\0", 16)) + "\r\n"));
        // acting for someone else: refused and counted
        CPPUNIT_ASSERT_EQUAL(std::string("535 5.7.8 Error: authentication failed\r\n"),
                             h.send("AUTH PLAIN " + plain("alice@example.org", "bob", "hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT(h.log.has("authorization identity refused"));
        CPPUNIT_ASSERT_EQUAL(0, h.auth.calls);
    }

    // ESMTPAuthProxyUsers: a listed login authenticates with its own
    // password and then acts as the PLAIN authorization identity.
    void testProxyUsers()
    {
        AuthHarness h;
        h.cfg.auth_proxy_users = {"bob"};
        h.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             h.send("AUTH PLAIN " + plain("alice@example.org", "bob", "hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("bob"), h.auth.last_user); // bob's password was checked
        CPPUNIT_ASSERT_EQUAL(std::string("alice@example.org"), std::string(h.s().auth_user()));
        CPPUNIT_ASSERT(h.log.has("AUTH PLAIN user=bob: authenticated, acting as alice@example.org"));
        // the proxy's wrong password: refused like any other
        AuthHarness w;
        w.cfg.auth_proxy_users = {"bob"};
        w.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("535 5.7.8 Error: authentication failed\r\n"),
                             w.send("AUTH PLAIN " + plain("alice@example.org", "bob", "wrong") + "\r\n"));
        CPPUNIT_ASSERT(w.s().auth_user().empty());
        // a login not in the list may not act for anyone, not even for a proxy
        CPPUNIT_ASSERT_EQUAL(std::string("535 5.7.8 Error: authentication failed\r\n"),
                             w.send("AUTH PLAIN " + plain("bob", "alice@example.org", "s3cret-pw") + "\r\n"));
        CPPUNIT_ASSERT(w.log.has("authorization identity refused"));
        // an authorization identity that is no acceptable user name
        AuthHarness b;
        b.cfg.auth_proxy_users = {"bob"};
        b.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("535 5.7.8 Error: authentication failed\r\n"),
                             b.send("AUTH PLAIN " + plain("al\x01ice", "bob", "hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(0, b.auth.calls);
        // an answer that comes later keeps the authorization identity
        AuthHarness d;
        d.cfg.auth_proxy_users = {"bob"};
        d.begin();
        d.auth.defer = true;
        CPPUNIT_ASSERT_EQUAL(std::string(),
                             d.send("AUTH PLAIN " + plain("alice@example.org", "bob", "hunter2-pw") + "\r\n"));
        d.s().auth_done(*d.auth.pending);
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"), d.take());
        CPPUNIT_ASSERT_EQUAL(std::string("alice@example.org"), std::string(d.s().auth_user()));
    }

    void testFailureLimit()
    {
        AuthHarness h;
        h.begin();
        std::string bad = "AUTH PLAIN " + plain("", "bob", "wrong") + "\r\n";
        CPPUNIT_ASSERT_EQUAL(std::string("535 5.7.8 Error: authentication failed\r\n"), h.send(bad));
        CPPUNIT_ASSERT_EQUAL(std::string("535 5.7.8 Error: authentication failed\r\n"),
                             h.send("AUTH PLAIN " + plain("", "nobody", "x") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("421 4.7.0 mx.example.org Error: too many authentication failures\r\n"),
                             h.send(bad));
        CPPUNIT_ASSERT(h.s().closing());
        CPPUNIT_ASSERT_EQUAL(3, h.auth.calls);
    }

    void testUnavailable()
    {
        AuthHarness h;
        h.begin();
        h.auth.down = true;
        CPPUNIT_ASSERT_EQUAL(std::string("454 4.7.0 Temporary authentication failure\r\n"),
                             h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n"));
        h.auth.down = false;
        // not counted: three more tries are allowed
        for (int i = 0; i < 2; ++i)
            h.send("AUTH PLAIN " + plain("", "bob", "x") + "\r\n");
        CPPUNIT_ASSERT(!h.s().closing());
        // no Authenticator at all: 454 as well
        AuthHarness n;
        n.start();
        n.send("EHLO x\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("454 4.7.0 Temporary authentication failure\r\n"),
                             n.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n"));
    }

    // The glue's bulkhead (ESMTPMaxWorkers) refused the check: 421 and
    // close at once, not counted as a failure.
    void testBusy()
    {
        AuthHarness h;
        h.begin();
        h.auth.busy = true;
        CPPUNIT_ASSERT_EQUAL(std::string("421 4.3.2 mx.example.org Server busy, try again later\r\n"),
                             h.send("AUTH PLAIN " + plain("", "bob", "x") + "\r\n"));
        CPPUNIT_ASSERT(h.s().closing());
    }

    void testDeferredHoldsInput()
    {
        AuthHarness h;
        h.begin();
        h.auth.defer = true;
        std::string out =
            h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\nMAIL FROM:<bob@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string(), out);
        CPPUNIT_ASSERT(h.s().auth_pending());
        CPPUNIT_ASSERT_EQUAL(std::string(), h.send("RCPT TO:<x@elsewhere.example>\r\n"));
        CPPUNIT_ASSERT(!h.rec->saw("mail"));
        h.s().auth_done(*h.auth.pending);
        out = h.take();
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"),
                             out);
        CPPUNIT_ASSERT(!h.s().auth_pending());
        // a late answer when nothing waits is ignored
        h.s().auth_done(AuthVerdict::denied);
        CPPUNIT_ASSERT_EQUAL(std::string(), h.take());
    }

    void testPlaintextWhenAllowed()
    {
        AuthHarness h(false);
        h.cfg.auth_require_tls = false;
        std::string ehlo = h.begin();
        CPPUNIT_ASSERT(has(ehlo, "AUTH PLAIN LOGIN"));
        CPPUNIT_ASSERT_EQUAL(std::string("235 2.7.0 Authentication successful\r\n"),
                             h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("ESMTPA"), std::string(h.s().protocol()));
    }

    void testPasswordNeverLogged()
    {
        AuthHarness h;
        h.cfg.max_auth_failures = 0;
        h.begin();
        h.send("AUTH PLAIN " + plain("", "bob", "wrong-pw-1") + "\r\n");
        h.send("AUTH LOGIN " + b64("bob") + "\r\n");
        h.send(b64("wrong-pw-2") + "\r\n");
        h.send("AUTH PLAIN\r\n");
        h.send(plain("", "bob", "hunter2-pw") + "\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("bob"), std::string(h.s().auth_user()));
        // The server ended the exchange (501) while the client still sends
        // its password: that line is no command, and no log shows it.
        AuthHarness cut;
        cut.begin();
        CPPUNIT_ASSERT(has(cut.send("AUTH LOGIN " + b64(std::string("bad\x01user")) + "\r\n"), "501 5.5.2"));
        CPPUNIT_ASSERT(has(cut.send(b64("wrong-pw-3") + "\r\n"), "500"));
        CPPUNIT_ASSERT(cut.log.has("< ******** (line after an ended AUTH exchange)"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), cut.send("NOOP\r\n"));
        CPPUNIT_ASSERT(cut.log.has("< NOOP"));
        for (const auto &rec : cut.log.records)
            CPPUNIT_ASSERT_MESSAGE(rec.second, !has(rec.second, b64("wrong-pw-3")));
        h.send("QUIT\r\n");
        CPPUNIT_ASSERT(h.log.has("< AUTH PLAIN ********"));
        CPPUNIT_ASSERT(h.log.has("< ******** (SASL response)"));
        for (const auto &rec : h.log.records)
            for (std::string secret :
                 {std::string("wrong-pw-1"), std::string("wrong-pw-2"), std::string("hunter2-pw"),
                  plain("", "bob", "hunter2-pw"), b64("wrong-pw-2"), plain("", "bob", "wrong-pw-1")})
                CPPUNIT_ASSERT_MESSAGE(rec.second, !has(rec.second, secret));
    }

    void testSubmissionAndRelay()
    {
        AuthHarness h;
        h.cfg.submission = true;
        h.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("530 5.7.0 Authentication required\r\n"),
                             h.send("MAIL FROM:<bob@example.org>\r\n"));
        // without submission: no relay before AUTH, relay after
        AuthHarness r;
        r.begin();
        r.send("MAIL FROM:<bob@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("550 5.7.1 Relay access denied\r\n"),
                             r.send("RCPT TO:<x@elsewhere.example>\r\n"));
        r.send("RSET\r\n");
        r.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n");
        r.send("MAIL FROM:<bob@example.org>\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.5 Ok\r\n"), r.send("RCPT TO:<x@elsewhere.example>\r\n"));
        // XCLIENT LOGIN: the front end authenticated the client
        Harness x;
        x.cfg.xclient_hosts.add("192.0.2.7");
        x.ehlo();
        x.send("XCLIENT LOGIN=carol\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("carol"), std::string(x.s().auth_user()));
    }

    void testSenderLoginMatch()
    {
        AuthHarness h;
        h.cfg.sender_login_match = true;
        h.begin();
        h.send("AUTH PLAIN " + plain("", "alice@example.org", "s3cret-pw") + "\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.7.1 <mallory@evil.example>: Sender address rejected: not owned by user "
                                         "alice@example.org\r\n"),
                             h.send("MAIL FROM:<mallory@evil.example>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<Alice@Example.ORG>\r\n"));
        h.send("RSET\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<other@example.org>\r\n"));
        h.send("RSET\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<>\r\n"));
        // a login without a domain owns its local part
        AuthHarness b;
        b.cfg.sender_login_match = true;
        b.begin();
        b.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), b.send("MAIL FROM:<bob@example.org>\r\n"));
        b.send("RSET\r\n");
        CPPUNIT_ASSERT(has(b.send("MAIL FROM:<alice@example.org>\r\n"), "553 5.7.1"));
    }

    void testSenderLoginMapFile()
    {
        esmtp::SenderLoginMap m;
        std::string err;
        CPPUNIT_ASSERT(m.parse("# owners\n"
                               "Alice@Example.org  alice@example.org\n"
                               "sales@example.org alice@example.org, bob  # two\n"
                               "\n"
                               "@example.net\tcarol\r\n",
                               err));
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), m.size());
        CPPUNIT_ASSERT(m.owns("alice@example.org", "alice@EXAMPLE.org"));
        CPPUNIT_ASSERT(m.owns("BOB", "sales@example.org"));
        CPPUNIT_ASSERT(m.owns("carol", "anyone@example.net"));
        CPPUNIT_ASSERT(!m.owns("bob", "alice@example.org"));
        CPPUNIT_ASSERT(m.owners("nobody@example.com") == nullptr);
        CPPUNIT_ASSERT(!m.parse("alice@example.org\n", err));
        CPPUNIT_ASSERT_EQUAL(std::string("line 1: 'alice@example.org' has no login"), err);
        CPPUNIT_ASSERT(!m.parse("# x\nexample.org bob\n", err));
        CPPUNIT_ASSERT_EQUAL(std::string("line 2: 'example.org' is neither an address (local@domain) nor @domain"),
                             err);
    }

    void testSenderLoginMapSession()
    {
        auto map = std::make_shared<esmtp::SenderLoginMap>();
        std::string err;
        CPPUNIT_ASSERT(
            map->parse("sales@example.org alice@example.org bob\nalice@example.org alice@example.org\n", err));
        AuthHarness h;
        h.cfg.sender_login_map = map;
        h.begin();
        // not logged in: an owned address is refused, others pass
        CPPUNIT_ASSERT_EQUAL(std::string("553 5.7.1 <sales@example.org>: Sender address rejected: not logged in\r\n"),
                             h.send("MAIL FROM:<sales@example.org>\r\n"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<x@elsewhere.example>\r\n"));
        h.send("RSET\r\n");
        // another spelling of the same mailbox is the same mailbox (RFC 5321 4.1.2)
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<\"alice\"@example.org>\r\n"), "553 5.7.1"));
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<\"al\\ice\"@EXAMPLE.org>\r\n"), "553 5.7.1"));
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<\"SALES\"@example.org>\r\n"), "not logged in"));
        // an address literal may be this server: owned, a login is needed
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<alice@[127.0.0.1]>\r\n"), "not logged in"));
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<x@[IPv6:::1]>\r\n"), "not logged in"));
        // a quoted local part that needs its quotes is another mailbox
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<\"alice x\"@example.org>\r\n"));
        h.send("RSET\r\n");
        h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<sales@example.org>\r\n"));
        h.send("RSET\r\n");
        // logged in: only what the login owns (the map replaces the domain rule)
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<alice@example.org>\r\n"), "not owned by user bob"));
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<bob@example.org>\r\n"), "not owned by user bob"));
        CPPUNIT_ASSERT(has(h.send("MAIL FROM:<sales@[192.0.2.1]>\r\n"), "not owned by user bob"));
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<\"s\\ales\"@example.org>\r\n"));
        h.send("RSET\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<>\r\n"));
    }

    void testCanonicalMailbox()
    {
        using esmtp::canonical_mailbox;
        CPPUNIT_ASSERT_EQUAL(std::string("bob@example.test"), canonical_mailbox("\"bob\"@Example.TEST"));
        CPPUNIT_ASSERT_EQUAL(std::string("bob@example.test"), canonical_mailbox("\"b\\ob\"@example.test"));
        CPPUNIT_ASSERT_EQUAL(std::string("b.o.b@example.test"), canonical_mailbox("\"B.o.b\"@example.test"));
        CPPUNIT_ASSERT_EQUAL(std::string("\"b ob\"@example.test"), canonical_mailbox("\"b\\ ob\"@example.test"));
        CPPUNIT_ASSERT_EQUAL(std::string("\"a\\\"b\"@x"), canonical_mailbox("\"a\\\"b\"@x"));
        CPPUNIT_ASSERT_EQUAL(std::string("\".bob\"@x"), canonical_mailbox("\".bob\"@x"));
        CPPUNIT_ASSERT_EQUAL(std::string("bob@[127.0.0.1]"), canonical_mailbox("Bob@[127.0.0.1]"));
    }

    void testAuthParameterOnMail()
    {
        AuthHarness h;
        h.begin();
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.1.0 Ok\r\n"), h.send("MAIL FROM:<bob@example.org> AUTH=<>\r\n"));
        Harness off;
        off.ehlo();
        CPPUNIT_ASSERT_EQUAL(std::string("555 5.5.4 Unsupported parameter AUTH\r\n"),
                             off.send("MAIL FROM:<bob@example.org> AUTH=<>\r\n"));
    }

    void testResponseTooLong()
    {
        AuthHarness h;
        h.begin();
        h.send("AUTH PLAIN\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("500 5.5.2 Line too long\r\n"), h.send(std::string(600, 'A') + "\r\n"));
        CPPUNIT_ASSERT(h.s().phase() == esmtp::Phase::command);
        CPPUNIT_ASSERT_EQUAL(std::string("250 2.0.0 Ok\r\n"), h.send("NOOP\r\n"));
        // a password over 255 octets
        std::string long_pw = plain("", "bob", std::string(300, 'p'));
        h.send("AUTH PLAIN\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("501 5.5.2 Password too long\r\n"), h.send(long_pw + "\r\n"));
    }

    void testSmtpUtf8Keyword()
    {
        AuthHarness h;
        h.begin();
        h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n");
        h.send("MAIL FROM:<bob@example.org> SMTPUTF8\r\n");
        CPPUNIT_ASSERT_EQUAL(std::string("UTF8SMTPSA"), std::string(h.s().protocol()));
    }

    void testStartTlsForgetsAuth()
    {
        AuthHarness h(false);
        h.cfg.auth_require_tls = false;
        h.cfg.starttls = esmtp::StartTls::on;
        h.begin();
        h.send("AUTH PLAIN " + plain("", "bob", "hunter2-pw") + "\r\n");
        h.send("STARTTLS\r\n");
        h.s().tls_started(tls13());
        CPPUNIT_ASSERT(h.s().auth_user().empty());
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(AuthTest);
