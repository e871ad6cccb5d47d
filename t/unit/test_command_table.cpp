// CommandTable: built-in verbs first, then the handler's commands
// (HandlerFactory::commands(), compiled once), first match wins.

#include "engine/command_table.hpp"
#include "engine/defaults.hpp"
#include "engine/verbs.hpp"

#include <cppunit/extensions/HelperMacros.h>

#include <memory>
#include <string>
#include <vector>

using esmtp::CommandMatch;
using esmtp::CommandTable;
using esmtp::Verb;

namespace
{

// Compile `specs`; fails the test when they do not compile.
std::shared_ptr<const CommandTable> table(const std::vector<esmtp::CommandSpec> &specs)
{
    std::string err;
    auto t = CommandTable::compile(specs, err);
    CPPUNIT_ASSERT_MESSAGE(err, t != nullptr);
    CPPUNIT_ASSERT(err.empty());
    return t;
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
    CPPUNIT_TEST(testVerbTable);
    CPPUNIT_TEST(testHelpText);
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
            CPPUNIT_ASSERT_MESSAGE(c.line, m.name.empty());
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
        CPPUNIT_ASSERT(m.name.empty());
        CPPUNIT_ASSERT(m.captures.empty());
    }

    void testCustomCommandWithCaptures()
    {
        auto t = table({{"XCLIENT", "^XCLIENT NAME=(\\S+) ADDR=(\\S+)$"}});
        CommandMatch m = t->match("XCLIENT NAME=host.example ADDR=192.0.2.7");
        CPPUNIT_ASSERT(m.verb == Verb::custom);
        CPPUNIT_ASSERT_EQUAL(std::string("XCLIENT"), std::string(m.name));
        CPPUNIT_ASSERT_EQUAL(std::size_t(3), m.captures.size());
        CPPUNIT_ASSERT_EQUAL(std::string("XCLIENT NAME=host.example ADDR=192.0.2.7"), m.captures[0]);
        CPPUNIT_ASSERT_EQUAL(std::string("host.example"), m.captures[1]);
        CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.7"), m.captures[2]);
        // lines that do not match the handler's pattern are the built-in XCLIENT
        CPPUNIT_ASSERT(t->match("XCLIENT").verb == Verb::xclient);
        // a null table knows the built-in verbs only
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "XCLIENT NAME=a ADDR=b").verb == Verb::xclient);
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "xclient\tNAME=a").argument == "NAME=a");
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "XCLIENTS NAME=a").verb == Verb::unknown);
        CPPUNIT_ASSERT(CommandTable::match(nullptr, "NOOP").verb == Verb::noop);
    }

    void testCustomCommandCaseInsensitive()
    {
        auto t = table({{"XPING", "^XPING$"}});
        CPPUNIT_ASSERT(t->match("xping").verb == Verb::custom);
        CPPUNIT_ASSERT(t->match("XpInG").verb == Verb::custom);
    }

    void testFirstMatchWins()
    {
        auto t = table({{"first", "^XFOO (\\d+)$"}, {"second", "^XFOO .*$"}});
        CommandMatch m = t->match("XFOO 42");
        CPPUNIT_ASSERT(m.verb == Verb::custom);
        CPPUNIT_ASSERT_EQUAL(std::string("first"), std::string(m.name));
        CPPUNIT_ASSERT_EQUAL(std::string("42"), m.captures.at(1));
        // only the second one matches this line
        m = t->match("XFOO bar");
        CPPUNIT_ASSERT_EQUAL(std::string("second"), std::string(m.name));
        CPPUNIT_ASSERT(t->names() == (std::vector<std::string_view>{"first", "second"}));
    }

    void testBadRegex()
    {
        std::string err;
        CPPUNIT_ASSERT(!CommandTable::compile({{"XOK", "^XOK$"}, {"XBAD", "^XBAD (unclosed$"}}, err));
        CPPUNIT_ASSERT_MESSAGE(err, err.find("XBAD") != std::string::npos);
        CPPUNIT_ASSERT_MESSAGE(err, err.find("offset") != std::string::npos);
        err.clear();
        CPPUNIT_ASSERT(!CommandTable::compile({{"", "^X$"}}, err)); // a command needs a name
        CPPUNIT_ASSERT(!err.empty());
        CPPUNIT_ASSERT(CommandTable::compile({}, err) != nullptr);
    }

    void testCannotOverrideBuiltin()
    {
        auto t = table({{"a", "^NOOP.*$"}, {"b", "^MAIL FROM:.*$"}, {"all", ".*"}});
        CommandMatch m = t->match("NOOP");
        CPPUNIT_ASSERT(m.verb == Verb::noop);
        CPPUNIT_ASSERT(m.name.empty());
        m = t->match("MAIL FROM:<a@b>");
        CPPUNIT_ASSERT(m.verb == Verb::mail);
        CPPUNIT_ASSERT_EQUAL(std::string("FROM:<a@b>"), std::string(m.argument));
        // the catch-all gets what is not a built-in verb
        m = t->match("WHATEVER");
        CPPUNIT_ASSERT(m.verb == Verb::custom);
        CPPUNIT_ASSERT_EQUAL(std::string("all"), std::string(m.name));
    }

    // The verb table's rows (engine/verbs.cpp): the sequencing rules.
    void testVerbTable()
    {
        using esmtp::Tx;
        using esmtp::verb_rule;
        for (Verb v : {Verb::helo, Verb::ehlo, Verb::mail, Verb::rset, Verb::noop, Verb::vrfy, Verb::expn, Verb::help})
            CPPUNIT_ASSERT_MESSAGE(verb_rule(v).name, verb_rule(v).junk);
        for (Verb v : {Verb::rcpt, Verb::data, Verb::bdat, Verb::quit, Verb::custom, Verb::unknown})
            CPPUNIT_ASSERT_MESSAGE(verb_rule(v).name, !verb_rule(v).junk);
        for (Verb v : {Verb::helo, Verb::ehlo, Verb::mail, Verb::rcpt, Verb::data, Verb::bdat, Verb::rset, Verb::noop,
                       Verb::vrfy, Verb::expn, Verb::help, Verb::quit})
            CPPUNIT_ASSERT_EQUAL(std::string(esmtp::verb_name(v)), std::string(verb_rule(v).name));
        CPPUNIT_ASSERT(verb_rule(Verb::quit).when_refused);
        CPPUNIT_ASSERT(!verb_rule(Verb::noop).when_refused);
        CPPUNIT_ASSERT(verb_rule(Verb::mail).needs_hello && verb_rule(Verb::mail).refused_in_tx);
        CPPUNIT_ASSERT(verb_rule(Verb::rcpt).needs_tx == Tx::mail && verb_rule(Verb::rcpt).refused_in_bdat);
        CPPUNIT_ASSERT(verb_rule(Verb::data).needs_tx == Tx::rcpt && verb_rule(Verb::data).refused_in_bdat);
        CPPUNIT_ASSERT(verb_rule(Verb::bdat).needs_tx == Tx::rcpt && !verb_rule(Verb::bdat).refused_in_bdat);
        CPPUNIT_ASSERT_EQUAL(unsigned(esmtp::ext_chunking), verb_rule(Verb::bdat).extension);
        for (Verb v : {Verb::helo, Verb::ehlo, Verb::rset})
            CPPUNIT_ASSERT(verb_rule(v).resets_tx);
        CPPUNIT_ASSERT(!verb_rule(Verb::noop).resets_tx);
    }

    void testHelpText()
    {
        esmtp::SessionConfig cfg;
        CPPUNIT_ASSERT_EQUAL(std::string("Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY"),
                             esmtp::help_text(cfg, esmtp::Hello::ehlo));
        // no BDAT after a plain HELO, nor without CHUNKING
        CPPUNIT_ASSERT_EQUAL(std::string::npos, esmtp::help_text(cfg, esmtp::Hello::helo).find("BDAT"));
        cfg.extensions &= ~esmtp::ext_chunking;
        CPPUNIT_ASSERT_EQUAL(std::string::npos, esmtp::help_text(cfg, esmtp::Hello::ehlo).find("BDAT"));
        std::string err;
        cfg.commands = CommandTable::compile({{"XPING", "^XPING$"}}, err);
        CPPUNIT_ASSERT_EQUAL(std::string("Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY XPING"),
                             esmtp::help_text(cfg, esmtp::Hello::none));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(CommandTableTest);
