// The `maildir DIR` handler: every accepted message becomes one file in the
// Maildir DIR (tmp/ then new/), fsynced with its directory before 250.
//
// DIR may name a Maildir per recipient: `/var/mail/%d/%u/Maildir`, where %u
// is the recipient's local part and %d its domain (lowercased, unsafe bytes
// encoded, see MaildirPath) and %% a percent sign. Then one copy is stored
// per distinct expanded directory, all or nothing: if one copy cannot be
// made durable, every copy already made is removed and the reply is 451.
#pragma once

#include <esmtp/provider.hpp>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace esmtp
{

class MaildirProvider final : public HandlerProvider
{
  public:
    std::shared_ptr<HandlerFactory> configure(const HandlerContext &ctx, const std::vector<std::string> &args,
                                              std::string &error) const override;
};

// A Maildir path, possibly with %u / %d placeholders.
class MaildirPath
{
  public:
    // Parse an absolute template. Returns false and sets `error` (which
    // starts with "ESMTPHandler maildir:") for an unknown %x, a trailing
    // '%', or a "." / ".." component at or after the first placeholder.
    bool parse(std::string_view tmpl, std::string &error);

    // True when the path depends on the recipient (%u or %d present).
    bool per_recipient() const { return per_recipient_; }
    // The fixed part before the first placeholder (the whole path when there
    // is none): every expanded path starts with it.
    const std::string &prefix() const { return prefix_; }

    // The directory for recipient `to`. `hostname` stands in for the domain
    // of <postmaster>. Returns false when the result would not be a safe
    // path below prefix() (never for a parsed template and a parsed path,
    // checked all the same) or a component would be longer than NAME_MAX.
    bool expand(const Path &to, std::string_view hostname, std::string &out) const;

    // One path component from an address part: quotes of a quoted local
    // part removed and its backslash escapes undone (`unquote`), ASCII
    // letters lowercased, every byte outside [a-z0-9._+-], a leading '.',
    // and every byte >= 0x80 written as =XX (upper-case hex); the empty
    // string becomes "=". The result never contains '/' or NUL, is never
    // "." or "..", never starts with '.', and differs for different inputs.
    static std::string component(std::string_view raw, bool unquote);

  private:
    struct Piece {
        char kind; // 0 literal, 'u', 'd'
        std::string text;
    };
    std::vector<Piece> pieces_;
    std::string prefix_;
    bool per_recipient_ = false;
};

struct MaildirOptions {
    // create=yes (default): a missing Maildir is created, with its missing
    // parents. create=no: only Maildirs that exist are delivered to; with a
    // per-recipient path, RCPT to a recipient whose directory does not exist
    // gets 550 5.1.1 (its tmp/ new/ cur/ are still created when missing).
    bool create = true;
};

// For the unit tests: a factory delivering into `dir` (absolute path, may
// contain %u/%d). Returns nullptr and sets *error for a bad template.
std::shared_ptr<HandlerFactory> make_maildir_factory(const std::string &dir, std::string *error = nullptr);
std::shared_ptr<HandlerFactory> make_maildir_factory(const std::string &dir, const MaildirOptions &options,
                                                     std::string *error = nullptr);

// For the unit tests: sees the handler's file system operations, in order:
// "mkdir" DIR (after the fact), "write" TMPFILE (before each write of the
// message file), "fdatasync" FILE (before it), "rename" NEWFILE (after it
// returned), "fsync" DIR (before a directory fsync), "fsynced" DIR (after
// it returned). For "write", "fdatasync" and "fsync" a non-zero return is
// taken as that errno and the operation is skipped. Deliveries in several
// threads call it concurrently (the hook must be thread-safe); set it only
// while no session runs; an empty function removes it.
using MaildirSyscallHook = std::function<int(std::string_view op, const std::string &path)>;
void set_maildir_syscall_hook(MaildirSyscallHook hook);

} // namespace esmtp
