// ESMTPSenderLoginMatch FILE: which logins own which sender addresses, as
// Postfix's smtpd_sender_login_maps with reject_sender_login_mismatch.
//
// The file has one entry a line: a sender address or "@domain", then the
// logins that own it (separated by commas or spaces); '#' starts a
// comment. Keys are case-insensitive. An address is looked up whole, then
// as "@domain", in its canonical form (canonical_mailbox: a quoted local
// part that needs no quoting is the same mailbox).
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace esmtp
{

class SenderLoginMap
{
  public:
    // Parses the file's text; false with `error` ("line N: ...") on a line
    // that has a key but no login, or a key that is no address or @domain.
    bool parse(std::string_view text, std::string &error);
    // The logins that own `address` (local@domain); null when nobody does.
    const std::vector<std::string> *owners(std::string_view address) const;
    // `login` owns `address`.
    bool owns(std::string_view login, std::string_view address) const;
    std::size_t size() const { return map_.size(); }

  private:
    std::unordered_map<std::string, std::vector<std::string>> map_;
};

} // namespace esmtp
