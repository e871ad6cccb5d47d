// The regex-routed command table: built-in verbs first (by their four
// letters, without a regex), then the handler's own commands
// (HandlerFactory::commands()) in order; first match wins.
//
// A table is compiled once, when the configuration is read, and is then
// immutable: every session of the server (on any thread) matches against
// the same compiled, JIT-compiled PCRE2 patterns.
#pragma once

#include <esmtp/provider.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

enum class Verb {
    helo,
    ehlo,
    mail,
    rcpt,
    data,
    bdat,
    rset,
    vrfy,
    expn,
    help,
    noop,
    quit,
    starttls,
    xclient,
    auth,
    custom,
    unknown
};

struct CommandMatch {
    Verb verb = Verb::unknown;
    std::string_view argument;         // built-in verbs: what follows the verb and its spaces; else the line
    std::string_view name;             // Verb::custom: the CommandSpec name (lives as long as the table)
    std::vector<std::string> captures; // Verb::custom: index 0 is the whole match
};

class Regex; // PCRE2 wrapper, defined in command_table.cpp

class CommandTable
{
  public:
    CommandTable();
    ~CommandTable();
    CommandTable(const CommandTable &) = delete;
    CommandTable &operator=(const CommandTable &) = delete;

    // Compile a handler's commands. On a bad pattern returns null and sets
    // `error` (naming the command and the offset).
    static std::shared_ptr<const CommandTable> compile(const std::vector<CommandSpec> &specs, std::string &error);

    // Route one command line (CRLF removed). `table` may be null (built-in
    // verbs only).
    static CommandMatch match(const CommandTable *table, std::string_view line);
    CommandMatch match(std::string_view line) const { return match(this, line); }

    // The names of the handler's commands, in order (for HELP).
    std::vector<std::string_view> names() const;

  private:
    struct Entry;
    std::vector<std::unique_ptr<Entry>> entries_;
};

const char *verb_name(Verb v);

} // namespace esmtp
