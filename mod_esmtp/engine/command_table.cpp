#include "engine/command_table.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cctype>

namespace esmtp
{

// An owning PCRE2 pattern (caseless, JIT-compiled where available).
class Regex
{
  public:
    static std::unique_ptr<Regex> compile(std::string_view pattern, std::string *error)
    {
        int err = 0;
        PCRE2_SIZE offset = 0;
        pcre2_code *code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_CASELESS,
                                         &err, &offset, nullptr);
        if (!code) {
            if (error) {
                PCRE2_UCHAR buf[256];
                pcre2_get_error_message(err, buf, sizeof buf);
                *error = "bad regex at offset " + std::to_string(offset) + ": " + reinterpret_cast<char *>(buf);
            }
            return nullptr;
        }
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); // falls back to the interpreter if JIT is unavailable
        return std::unique_ptr<Regex>(new Regex(code));
    }
    ~Regex() { pcre2_code_free(code_); }
    Regex(const Regex &) = delete;
    Regex &operator=(const Regex &) = delete;

    bool match(std::string_view subject, std::vector<std::string> &captures) const
    {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(code_, nullptr);
        if (!md)
            return false;
        int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0, 0, md, nullptr);
        bool ok = rc > 0;
        if (ok) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            captures.clear();
            for (int i = 0; i < rc; ++i) {
                if (ov[2 * i] == PCRE2_UNSET)
                    captures.emplace_back();
                else
                    captures.emplace_back(subject.substr(ov[2 * i], ov[2 * i + 1] - ov[2 * i]));
            }
        }
        pcre2_match_data_free(md);
        return ok;
    }

  private:
    explicit Regex(pcre2_code *c) : code_(c) {}
    pcre2_code *code_;
};

struct CommandTable::Entry {
    std::string name;
    std::unique_ptr<Regex> regex;
};

namespace
{

struct BuiltIn {
    std::string_view name;
    Verb verb;
};

constexpr std::array<BuiltIn, 15> kBuiltIns{{
    {"HELO", Verb::helo},
    {"EHLO", Verb::ehlo},
    {"MAIL", Verb::mail},
    {"RCPT", Verb::rcpt},
    {"DATA", Verb::data},
    {"BDAT", Verb::bdat},
    {"RSET", Verb::rset},
    {"VRFY", Verb::vrfy},
    {"EXPN", Verb::expn},
    {"HELP", Verb::help},
    {"NOOP", Verb::noop},
    {"QUIT", Verb::quit},
    {"STARTTLS", Verb::starttls},
    {"XCLIENT", Verb::xclient},
    {"AUTH", Verb::auth},
}};

// The built-in verbs of `len` letters.
bool match_builtin(std::string_view line, std::size_t len, CommandMatch &m)
{
    if (line.size() < len || (line.size() > len && line[len] != ' ' && line[len] != '\t'))
        return false;
    char up[8];
    for (std::size_t i = 0; i < len; ++i)
        up[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(line[i])));
    for (const auto &b : kBuiltIns) {
        if (std::string_view(up, len) == b.name) {
            m.verb = b.verb;
            std::string_view arg = line.substr(len);
            while (!arg.empty() && (arg.front() == ' ' || arg.front() == '\t'))
                arg.remove_prefix(1);
            while (!arg.empty() && (arg.back() == ' ' || arg.back() == '\t'))
                arg.remove_suffix(1);
            m.argument = arg;
            return true;
        }
    }
    return false;
}

} // namespace

const char *verb_name(Verb v)
{
    for (const auto &b : kBuiltIns)
        if (b.verb == v)
            return b.name.data();
    return v == Verb::custom ? "CUSTOM" : "UNKNOWN";
}

CommandTable::CommandTable() = default;
CommandTable::~CommandTable() = default;

std::shared_ptr<const CommandTable> CommandTable::compile(const std::vector<CommandSpec> &specs, std::string &error)
{
    auto table = std::make_shared<CommandTable>();
    for (const CommandSpec &spec : specs) {
        std::string why;
        auto re = Regex::compile(spec.pattern, &why);
        if (!re || spec.name.empty()) {
            error = "command '" + spec.name + "': " + (spec.name.empty() ? std::string("needs a name") : why);
            return nullptr;
        }
        auto e = std::make_unique<Entry>();
        e->name = spec.name;
        e->regex = std::move(re);
        table->entries_.push_back(std::move(e));
    }
    return table;
}

std::vector<std::string_view> CommandTable::names() const
{
    std::vector<std::string_view> v;
    for (const auto &e : entries_)
        v.emplace_back(e->name);
    return v;
}

CommandMatch CommandTable::match(const CommandTable *table, std::string_view line)
{
    CommandMatch m;
    // Built-in verbs are matched by their name first, without a regex:
    // "VERB" alone or "VERB" SP argument (the equivalent of
    // /^VERB(?:\s+(.*))?$/i), first match wins.
    // the verbs of 4 letters, and STARTTLS
    if ((match_builtin(line, 4, m) && m.verb != Verb::auth) || match_builtin(line, 8, m))
        return m;
    m = CommandMatch{};
    if (table) {
        for (const auto &e : table->entries_) {
            if (e->regex->match(line, m.captures)) {
                m.verb = Verb::custom;
                m.name = e->name;
                m.argument = line;
                return m;
            }
        }
    }
    // XCLIENT and AUTH after the handler's commands: a handler that
    // implemented its own before the module had one keeps it.
    if (match_builtin(line, 7, m) || match_builtin(line, 4, m))
        return m;
    m.verb = Verb::unknown;
    m.argument = line;
    return m;
}

} // namespace esmtp
