// CommandTable: built-in verbs first, then added commands, first match wins.

#include "engine/command_table.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <string>
#include <vector>

using esmtp::CommandMatch;
using esmtp::CommandTable;
using esmtp::Reply;
using esmtp::SessionView;
using esmtp::Verb;

namespace
{

// Enough of a session to call a CommandCallback.
class FakeView final : public SessionView
{
  public:
    std::string_view client_address() const override { return "192.0.2.1"; }
    unsigned client_port() const override { return 1234; }
    std::string_view remote_host() const override { return "192.0.2.1"; }
    std::string_view local_address() const override { return "127.0.0.1"; }
    unsigned local_port() const override { return 25; }
    std::string_view hostname() const override { return "mx.example.org"; }
    std::string_view helo_name() const override { return ""; }
    bool esmtp() const override { return false; }
    std::string_view protocol() const override { return "SMTP"; }
    const esmtp::Envelope &envelope() const override { return env_; }
    std::string_view queue_id() const override { return ""; }
    std::string_view trace_headers() const override { return ""; }
    std::uint64_t message_size() const override { return 0; }
    std::uint64_t max_message_size() const override { return 0; }
    void log(int, std::string_view) override {}
    void error(std::string_view) override {}
    bool add_command(std::string_view, esmtp::CommandCallback, std::string *) override { return false; }

  private:
    esmtp::Envelope env_;
};

esmtp::CommandCallback replying(int code, std::string text)
{
    return [code, text](SessionView &, const std::vector<std::string> &) { return Reply(code, text); };
}

} // namespace

class CommandTableTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(CommandTableTest);
    CPPUNIT_TEST(testEachVerb);
    CPPUNIT_TEST(testCaseInsensitive);
    CPPUNIT_TEST(testMailArgument);
    CPPUNIT_TEST(testArgumentAfterSpaces);
    CPPUNIT_TEST(testVerbAlone);
    CPPUNIT_TEST(testVerbPrefixIsNotVerb);
    CPPUNIT_TEST(testUnknownLines);
    CPPUNIT_TEST(testCustomCommandWithCaptures);
    CPPUNIT_TEST(testCustomCommandCaseInsensitive);
    CPPUNIT_TEST(testFirstMatchWins);
    CPPUNIT_TEST(testBadRegex);
    CPPUNIT_TEST(testCannotOverrideBuiltin);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testEachVerb()
    {
        CommandTable t;
        const struct {
            const char *line;
            Verb verb;
        } cases[] = {
            {"HELO client.example", Verb::helo},
            {"EHLO client.example", Verb::ehlo},
            {"MAIL FROM:<a@b>", Verb::mail},
            {"RCPT TO:<a@b>", Verb::rcpt},
            {"DATA", Verb::data},
            {"RSET", Verb::rset},
            {"VRFY user", Verb::vrfy},
            {"EXPN list", Verb::expn},
            {"HELP", Verb::help},
            {"NOOP", Verb::noop},
            {"QUIT", Verb::quit},
        };
        for (const auto &c : cases) {
            CommandMatch m = t.match(c.line);
            CPPUNIT_ASSERT_MESSAGE(c.line, m.verb == c.verb);
            CPPUNIT_ASSERT_MESSAGE(c.line, m.callback == nullptr);
        }
    }

    void testCaseInsensitive()
    {
        CommandTable t;
        CPPUNIT_ASSERT(t.match("helo x").verb == Verb::helo);
        CPPUNIT_ASSERT(t.match("eHlO x").verb == Verb::ehlo);
        CPPUNIT_ASSERT(t.match("mail from:<a@b>").verb == Verb::mail);
        CPPUNIT_ASSERT(t.match("Rcpt To:<a@b>").verb == Verb::rcpt);
        CPPUNIT_ASSERT(t.match("data").verb == Verb::data);
        CPPUNIT_ASSERT(t.match("rset").verb == Verb::rset);
        CPPUNIT_ASSERT(t.match("vrfy x").verb == Verb::vrfy);
        CPPUNIT_ASSERT(t.match("expn x").verb == Verb::expn);
        CPPUNIT_ASSERT(t.match("help").verb == Verb::help);
        CPPUNIT_ASSERT(t.match("noop").verb == Verb::noop);
        CPPUNIT_ASSERT(t.match("quit").verb == Verb::quit);
        CPPUNIT_ASSERT(t.match("QuIt").verb == Verb::quit);
    }

    void testMailArgument()
    {
        CommandTable t;
        CommandMatch m = t.match("MAIL FROM:<a@b>");
        CPPUNIT_ASSERT(m.verb == Verb::mail);
        CPPUNIT_ASSERT_EQUAL(std::string("FROM:<a@b>"), std::string(m.argument));

        m = t.match("RCPT TO:<c@d> NOTIFY=NEVER");
        CPPUNIT_ASSERT(m.verb == Verb::rcpt);
        CPPUNIT_ASSERT_EQUAL(std::string("TO:<c@d> NOTIFY=NEVER"), std::string(m.argument));

        m = t.match("EHLO client.example");
        CPPUNIT_ASSERT_EQUAL(std::string("client.example"), std::string(m.argument));
    }

    void testArgumentAfterSpaces()
    {
        CommandTable t;
        CommandMatch m = t.match("HELO    client.example");
        CPPUNIT_ASSERT(m.verb == Verb::helo);
        CPPUNIT_ASSERT_EQUAL(std::string("client.example"), std::string(m.argument));
    }

    void testVerbAlone()
    {
        CommandTable t;
        CommandMatch m = t.match("DATA");
        CPPUNIT_ASSERT(m.verb == Verb::data);
        CPPUNIT_ASSERT(m.argument.empty());

        // the module, not the table, decides that HELO needs a domain
        m = t.match("HELO");
        CPPUNIT_ASSERT(m.verb == Verb::helo);
        CPPUNIT_ASSERT(m.argument.empty());

        m = t.match("DATA foo");
        CPPUNIT_ASSERT(m.verb == Verb::data);
        CPPUNIT_ASSERT_EQUAL(std::string("foo"), std::string(m.argument));
    }

    void testVerbPrefixIsNotVerb()
    {
        CommandTable t;
        CPPUNIT_ASSERT(t.match("HELOX client").verb == Verb::unknown);
        CPPUNIT_ASSERT(t.match("QUITE").verb == Verb::unknown);
        CPPUNIT_ASSERT(t.match("DATAX").verb == Verb::unknown);
        CPPUNIT_ASSERT(t.match("MAILFROM:<a@b>").verb == Verb::unknown);
    }

    void testUnknownLines()
    {
        CommandTable t;
        CPPUNIT_ASSERT(t.match("").verb == Verb::unknown);
        CPPUNIT_ASSERT(t.match("FOO bar").verb == Verb::unknown);
        CPPUNIT_ASSERT(t.match("GET / HTTP/1.1").verb == Verb::unknown);
        CPPUNIT_ASSERT(t.match("   ").verb == Verb::unknown);
        CommandMatch m = t.match("XYZZY");
        CPPUNIT_ASSERT(m.callback == nullptr);
        CPPUNIT_ASSERT(m.captures.empty());
    }

    void testCustomCommandWithCaptures()
    {
        CommandTable t;
        std::string err;
        CPPUNIT_ASSERT(t.add("^XCLIENT NAME=(\\S+) ADDR=(\\S+)$", replying(220, "xclient"), &err));
        CPPUNIT_ASSERT(err.empty());

        CommandMatch m = t.match("XCLIENT NAME=host.example ADDR=192.0.2.7");
        CPPUNIT_ASSERT(m.verb == Verb::custom);
        CPPUNIT_ASSERT(m.callback != nullptr);
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), m.captures.size());
        CPPUNIT_ASSERT_EQUAL(std::string("XCLIENT NAME=host.example ADDR=192.0.2.7"), m.captures[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("host.example"), m.captures[1]);
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.7"), m.captures[2]);

        FakeView view;
        Reply r = (*m.callback)(view, m.captures);
        CPPUNIT_ASSERT_EQUAL(220, r.code);
        CPPUNIT_ASSERT_EQUAL(std::string("xclient"), r.lines.at(0));

        // lines that do not match the pattern stay unknown
        CPPUNIT_ASSERT(t.match("XCLIENT").verb == Verb::unknown);
    }

    void testCustomCommandCaseInsensitive()
    {
        CommandTable t;
        CPPUNIT_ASSERT(t.add("^XPING$", replying(250, "pong"), nullptr));
        CPPUNIT_ASSERT(t.match("xping").verb == Verb::custom);
        CPPUNIT_ASSERT(t.match("XpInG").verb == Verb::custom);
    }

    void testFirstMatchWins()
    {
        CommandTable t;
        CPPUNIT_ASSERT(t.add("^XFOO (\\d+)$", replying(250, "first"), nullptr));
        CPPUNIT_ASSERT(t.add("^XFOO .*$", replying(250, "second"), nullptr));

        FakeView view;
        CommandMatch m = t.match("XFOO 42");
        CPPUNIT_ASSERT(m.verb == Verb::custom);
        CPPUNIT_ASSERT_EQUAL(std::string("first"), (*m.callback)(view, m.captures).lines.at(0));
        CPPUNIT_ASSERT_EQUAL(std::string("42"), m.captures.at(1));

        // only the second one matches this line
        m = t.match("XFOO bar");
        CPPUNIT_ASSERT(m.verb == Verb::custom);
        CPPUNIT_ASSERT_EQUAL(std::string("second"), (*m.callback)(view, m.captures).lines.at(0));
    }

    void testBadRegex()
    {
        CommandTable t;
        std::string err;
        CPPUNIT_ASSERT(!t.add("^XBAD (unclosed$", replying(250, "x"), &err));
        CPPUNIT_ASSERT(!err.empty());
        CPPUNIT_ASSERT(!t.add("*oops", replying(250, "x"), nullptr)); // error pointer may be null
        // the failed pattern did not end up in the table
        CPPUNIT_ASSERT(t.match("XBAD (unclosed").verb == Verb::unknown);
        // and the table still works
        CPPUNIT_ASSERT(t.match("NOOP").verb == Verb::noop);
    }

    void testCannotOverrideBuiltin()
    {
        CommandTable t;
        t.add("^NOOP.*$", replying(500, "hijacked"), nullptr);
        t.add("^MAIL FROM:.*$", replying(500, "hijacked"), nullptr);
        t.add(".*", replying(500, "everything"), nullptr);

        CommandMatch m = t.match("NOOP");
        CPPUNIT_ASSERT(m.verb == Verb::noop);
        CPPUNIT_ASSERT(m.callback == nullptr);
        m = t.match("MAIL FROM:<a@b>");
        CPPUNIT_ASSERT(m.verb == Verb::mail);
        CPPUNIT_ASSERT_EQUAL(std::string("FROM:<a@b>"), std::string(m.argument));

        // the catch-all gets what is not a built-in verb
        m = t.match("WHATEVER");
        CPPUNIT_ASSERT(m.verb == Verb::custom);
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(CommandTableTest);
