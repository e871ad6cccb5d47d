// The regex-routed command table: first match wins; built-in verbs first.
#pragma once

#include <esmtp/handler.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

enum class Verb { helo, ehlo, mail, rcpt, data, bdat, rset, vrfy, expn, help, noop, quit, custom, unknown };

struct CommandMatch {
    Verb verb = Verb::unknown;
    std::string_view argument;         // built-in verbs: what follows the verb and its spaces
    const CommandCallback *callback{}; // Verb::custom
    std::vector<std::string> captures; // Verb::custom
};

class Regex; // PCRE2 wrapper, defined in command_table.cpp

class CommandTable
{
  public:
    CommandTable();
    ~CommandTable();
    CommandTable(const CommandTable &) = delete;
    CommandTable &operator=(const CommandTable &) = delete;

    // Add a handler command, tried after the built-in verbs.
    bool add(std::string_view pattern, CommandCallback cb, std::string *error);
    // Route one command line (CRLF removed).
    CommandMatch match(std::string_view line) const;

  private:
    struct Entry;
    std::vector<std::unique_ptr<Entry>> entries_;
};

const char *verb_name(Verb v);

} // namespace esmtp
