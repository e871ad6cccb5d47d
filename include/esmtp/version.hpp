// mod_esmtp public API: the API version and the C++ ABI tag a handler
// module is built with.
//
// register_handler_provider() (esmtp/apache.hpp) registers a provider under
// ESMTP_HANDLER_PROVIDER_VERSION, a plain string such as
//
//     "2.4 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20"
//
// mod_esmtp reads that string before it touches the provider object, and
// refuses at `apache2 -t`, naming both sides, a handler of another API
// major, a newer API minor (it would call methods this mod_esmtp lacks) or
// another standard library or library ABI (std::string & co. would not
// match). Handlers registered under the bare major "2" (API 2.0 to 2.2
// headers) carry no tag: they are taken as API 2.2 at most.
#pragma once

// <version> (C++20) or <ciso646> defines the library's identifying macros.
#if __has_include(<version>)
#include <version>
#else
#include <ciso646>
#endif

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "mod_esmtp's handler API needs C++17 or later (build with -std=c++20, as pkg-config --cflags mod_esmtp says)"
#endif

// The version is a fact of these headers, not a setting: a -D on the
// command line would only hide which headers were used.
#if defined(ESMTP_API_MAJOR) || defined(ESMTP_API_MINOR)
#error                                                                                                                 \
    "ESMTP_API_MAJOR/ESMTP_API_MINOR are defined by esmtp/version.hpp, not settings: remove the -D; build against the headers of the mod_esmtp you load"
#endif

// MAJOR changes when a handler built against an older header would
// misbehave (a class layout or an existing virtual method changed). MINOR
// counts additions: new virtual methods at the end of a class, new members
// at the end of a struct the module fills in. A handler runs on a
// mod_esmtp of the same major and the same or a later minor; mod_esmtp
// calls a handler's method added in minor N only when the handler was
// built against N or later.
#define ESMTP_API_MAJOR 2
#define ESMTP_API_MINOR 4

#define ESMTP_STRINGIFY_(x) #x
#define ESMTP_STRINGIFY(x) ESMTP_STRINGIFY_(x)

// The standard library and its ABI switch: std::string, std::vector,
// std::shared_ptr... cross the API by value and by reference.
#if defined(_LIBCPP_VERSION)
#define ESMTP_ABI_LIBRARY "libc++/_LIBCPP_ABI_VERSION=" ESMTP_STRINGIFY(_LIBCPP_ABI_VERSION)
#elif defined(__GLIBCXX__)
#if _GLIBCXX_USE_CXX11_ABI
#define ESMTP_ABI_LIBRARY "libstdc++/_GLIBCXX_USE_CXX11_ABI=1"
#else
#define ESMTP_ABI_LIBRARY "libstdc++/_GLIBCXX_USE_CXX11_ABI=0"
#endif
#else
#define ESMTP_ABI_LIBRARY "unknown-library"
#endif

#if __cplusplus > 202002L
#define ESMTP_ABI_STANDARD "C++23"
#elif __cplusplus == 202002L
#define ESMTP_ABI_STANDARD "C++20"
#else
#define ESMTP_ABI_STANDARD "C++17"
#endif

#define ESMTP_HANDLER_PROVIDER_GROUP "esmtp_handler"
#define ESMTP_HANDLER_PROVIDER_VERSION                                                                                 \
    ESMTP_STRINGIFY(ESMTP_API_MAJOR) "." ESMTP_STRINGIFY(ESMTP_API_MINOR) " " ESMTP_ABI_LIBRARY " " ESMTP_ABI_STANDARD
