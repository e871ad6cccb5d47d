// The http handler's pure parts: HMAC-SHA256 against RFC 4231's vectors
// (also fed in pieces), the reply mapping, the application's text, header
// values, and the configuration errors.

#include "engine/sha256.hpp"
#include "handlers/http.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>
#include <vector>

using esmtp::http::Answer;

namespace
{

std::string hmac_hex(const std::string &key, const std::vector<std::string> &pieces)
{
    esmtp::HmacSha256 mac(key);
    for (const auto &p : pieces)
        mac.update(p);
    return esmtp::hex_lower(mac.finish());
}

std::shared_ptr<esmtp::HandlerFactory> configure(const std::vector<std::string> &args, std::string &error)
{
    esmtp::HttpProvider p;
    return p.configure({"/srv", "mx.example.org", "ESMTPHandler"}, args, error);
}

} // namespace

class HttpTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(HttpTest);
    CPPUNIT_TEST(hmac_rfc4231);
    CPPUNIT_TEST(sha256_incremental);
    CPPUNIT_TEST(eom_replies);
    CPPUNIT_TEST(rcpt_replies);
    CPPUNIT_TEST(application_text);
    CPPUNIT_TEST(header_values);
    CPPUNIT_TEST(bad_configuration);
    CPPUNIT_TEST_SUITE_END();

  public:
    void hmac_rfc4231()
    {
        // Test case 2 and test case 6 (a key longer than the block)
        CPPUNIT_ASSERT_EQUAL(std::string("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
                             hmac_hex("Jefe", {"what do ya want ", "for nothing?"}));
        CPPUNIT_ASSERT_EQUAL(
            std::string("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            hmac_hex(std::string(131, '\xaa'), {"Test Using Larger Than Block-Size Key - Hash Key First"}));
    }

    void sha256_incremental()
    {
        // pieces across the 64-octet block boundary give the one-shot digest
        std::string data(1000, 'q');
        for (std::size_t i = 0; i < data.size(); ++i)
            data[i] = static_cast<char>('a' + i % 26);
        esmtp::Sha256 h;
        for (std::size_t at = 0; at < data.size(); at += 37)
            h.update(std::string_view(data).substr(at, 37));
        CPPUNIT_ASSERT(h.finish() == esmtp::sha256(data));
        CPPUNIT_ASSERT_EQUAL(std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
                             esmtp::hex_lower(esmtp::sha256("")));
    }

    void eom_replies()
    {
        const std::vector<long> reject{406, 422};
        CPPUNIT_ASSERT_EQUAL(0, esmtp::http::eom_reply({200, "", ""}, reject).code);
        CPPUNIT_ASSERT_EQUAL(0, esmtp::http::eom_reply({204, "", ""}, reject).code);
        esmtp::Reply r = esmtp::http::eom_reply({406, "text/plain; charset=utf-8", "No such list\r\nmore"}, reject);
        CPPUNIT_ASSERT_EQUAL(550, r.code);
        CPPUNIT_ASSERT_EQUAL(std::string("5.7.1"), r.enhanced);
        CPPUNIT_ASSERT_EQUAL(std::string("No such list"), r.lines.at(0));
        r = esmtp::http::eom_reply({422, "text/html", "<p>no</p>"}, reject);
        CPPUNIT_ASSERT_EQUAL(550, r.code);
        CPPUNIT_ASSERT(r.lines.at(0).find("<p>") == std::string::npos);
        r = esmtp::http::eom_reply({413, "", ""}, reject);
        CPPUNIT_ASSERT_EQUAL(552, r.code);
        CPPUNIT_ASSERT_EQUAL(std::string("5.3.4"), r.enhanced);
        for (long status : {301L, 302L, 307L, 400L, 401L, 404L, 500L, 503L, 100L}) {
            r = esmtp::http::eom_reply({status, "", ""}, reject);
            CPPUNIT_ASSERT_EQUAL(451, r.code);
            CPPUNIT_ASSERT_EQUAL(std::string("4.3.0"), r.enhanced);
        }
        // 406 is only a refusal when listed
        CPPUNIT_ASSERT_EQUAL(451, esmtp::http::eom_reply({406, "", ""}, {422}).code);
    }

    void rcpt_replies()
    {
        CPPUNIT_ASSERT_EQUAL(0, esmtp::http::rcpt_reply({204, "", ""}).code);
        esmtp::Reply r = esmtp::http::rcpt_reply({404, "", ""});
        CPPUNIT_ASSERT_EQUAL(550, r.code);
        CPPUNIT_ASSERT_EQUAL(std::string("5.1.1"), r.enhanced);
        r = esmtp::http::rcpt_reply({500, "", ""});
        CPPUNIT_ASSERT_EQUAL(450, r.code);
        CPPUNIT_ASSERT_EQUAL(std::string("4.3.0"), r.enhanced);
    }

    void application_text()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("gone \?\?"),
                             esmtp::http::application_text({406, "Text/Plain", "  gone \xc3\xa9 \r\n"}));
        CPPUNIT_ASSERT_EQUAL(std::string(), esmtp::http::application_text({406, "application/json", "{}"}));
        CPPUNIT_ASSERT_EQUAL(std::string(), esmtp::http::application_text({406, "text/plainx", "x"}));
        CPPUNIT_ASSERT_EQUAL(std::size_t(200),
                             esmtp::http::application_text({406, "text/plain", std::string(500, 'a')}).size());
    }

    void header_values()
    {
        CPPUNIT_ASSERT_EQUAL(std::string("a\tb c"), esmtp::http::header_value("a\r\n\tb\r\n c"));
        CPPUNIT_ASSERT_EQUAL(std::string("x  y z"), esmtp::http::header_value(std::string("x\r\ny\0z", 6)));
    }

    void bad_configuration()
    {
        for (const std::vector<std::string> &args : std::vector<std::vector<std::string>>{
                 {},
                 {"ftp://x/"},
                 {"http://x/", "timeout=0"},
                 {"http://x/", "timeout=301"},
                 {"http://x/", "timeout=5s"},
                 {"http://x/", "secret=/nonexistent/secret"},
                 {"http://x/", "ca=/nonexistent/ca.pem"},
                 {"http://x/", "unix=relative.sock"},
                 {"http://x/", "reject=200"},
                 {"http://x/", "reject=413"},
                 {"http://x/", "reject=406,"},
                 {"http://x/", "rcpt=/check"},
                 {"http://x/", "follow=1"},
                 {"http://x/", "timeout"},
             }) {
            std::string error;
            CPPUNIT_ASSERT_MESSAGE("accepted " + (args.empty() ? std::string("()") : args.back()),
                                   !configure(args, error));
            CPPUNIT_ASSERT_MESSAGE(error, error.starts_with("ESMTPHandler http: "));
        }
        std::string error;
        CPPUNIT_ASSERT(configure({"https://app.example/in", "timeout=30", "reject=406,422", "unix=/run/a.sock",
                                  "rcpt=http://app.example/rcpt"},
                                 error));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(HttpTest);
