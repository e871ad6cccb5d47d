// parse_api_version / api_mismatch: which handler registrations this
// mod_esmtp runs (issues 20 and 25).

#include "engine/api_version.hpp"

#include <esmtp/version.hpp>

#include <cppunit/extensions/HelperMacros.h>

#include <string>

using esmtp::api_mismatch;
using esmtp::ApiVersion;
using esmtp::parse_api_version;

namespace
{

ApiVersion parsed(const char *text)
{
    auto v = parse_api_version(text);
    CPPUNIT_ASSERT_MESSAGE(text, v.has_value());
    return *v;
}

bool contains(const std::string &s, const std::string &part)
{
    return s.find(part) != std::string::npos;
}

} // namespace

class ApiVersionTest : public CppUnit::TestFixture
{
    CPPUNIT_TEST_SUITE(ApiVersionTest);
    CPPUNIT_TEST(testOwnVersion);
    CPPUNIT_TEST(testTagged);
    CPPUNIT_TEST(testUntagged);
    CPPUNIT_TEST(testNotAVersion);
    CPPUNIT_TEST(testSameRuns);
    CPPUNIT_TEST(testOlderMinorRuns);
    CPPUNIT_TEST(testNewerMinorRefused);
    CPPUNIT_TEST(testOtherMajorRefused);
    CPPUNIT_TEST(testOtherLibraryRefused);
    CPPUNIT_TEST(testOtherStandardRuns);
    CPPUNIT_TEST_SUITE_END();

  public:
    void testOwnVersion()
    {
        const ApiVersion &v = esmtp::this_api_version();
        CPPUNIT_ASSERT_EQUAL(ESMTP_API_MAJOR, v.major);
        CPPUNIT_ASSERT_EQUAL(ESMTP_API_MINOR, v.minor);
        CPPUNIT_ASSERT(v.tagged);
        CPPUNIT_ASSERT_EQUAL(std::string(ESMTP_ABI_LIBRARY), v.library);
        CPPUNIT_ASSERT_EQUAL(std::string(ESMTP_ABI_STANDARD), v.standard);
#if defined(__GLIBCXX__) && _GLIBCXX_USE_CXX11_ABI
        CPPUNIT_ASSERT_EQUAL(std::string("libstdc++/_GLIBCXX_USE_CXX11_ABI=1"), v.library);
#endif
    }
    void testTagged()
    {
        ApiVersion v = parsed("2.7 libc++/_LIBCPP_ABI_VERSION=1 C++23");
        CPPUNIT_ASSERT_EQUAL(2, v.major);
        CPPUNIT_ASSERT_EQUAL(7, v.minor);
        CPPUNIT_ASSERT_EQUAL(std::string("libc++/_LIBCPP_ABI_VERSION=1"), v.library);
        CPPUNIT_ASSERT_EQUAL(std::string("C++23"), v.standard);
    }
    void testUntagged()
    {
        ApiVersion two = parsed("2");
        CPPUNIT_ASSERT(!two.tagged);
        CPPUNIT_ASSERT_EQUAL(2, two.minor); // API 2.0 to 2.2
        CPPUNIT_ASSERT_EQUAL(std::string("2.0 to 2.2"), esmtp::api_text(two));
        CPPUNIT_ASSERT_EQUAL(1, parsed("1").major);
    }
    void testNotAVersion()
    {
        for (const char *bad : {"", "x", "2.", "2.3", "2.3 lib", "2.3  C++20", "2.x lib C++20", "two", "2 lib"})
            CPPUNIT_ASSERT_MESSAGE(bad, !parse_api_version(bad));
    }
    void testSameRuns()
    {
        CPPUNIT_ASSERT_EQUAL(std::string(),
                             api_mismatch("h", parsed(ESMTP_HANDLER_PROVIDER_VERSION), esmtp::this_api_version()));
    }
    void testOlderMinorRuns()
    {
        ApiVersion ours = parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20");
        CPPUNIT_ASSERT_EQUAL(std::string(), api_mismatch("h", parsed("2"), ours));
        CPPUNIT_ASSERT_EQUAL(std::string(),
                             api_mismatch("h", parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20"), ours));
    }
    // Issue 20: a handler of a newer minor may call SessionView methods
    // this mod_esmtp's vtable does not have.
    void testNewerMinorRefused()
    {
        ApiVersion ours = parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20");
        std::string why = api_mismatch("h", parsed("2.4 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20"), ours);
        CPPUNIT_ASSERT_MESSAGE(why, contains(why, "handler 'h' was built against mod_esmtp API 2.4, this mod_esmtp "
                                                  "has API 2.3"));
    }
    void testOtherMajorRefused()
    {
        ApiVersion ours = parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20");
        std::string why = api_mismatch("old", parsed("1"), ours);
        CPPUNIT_ASSERT_MESSAGE(why,
                               contains(why, "built against mod_esmtp API 1, this mod_esmtp has API 2.3; rebuild"));
        why = api_mismatch("new", parsed("3.0 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20"), ours);
        CPPUNIT_ASSERT_MESSAGE(why, contains(why, "API 3.0, this mod_esmtp has API 2.3"));
    }
    // Issue 25: another standard library or library ABI is refused, naming
    // both builds.
    void testOtherLibraryRefused()
    {
        ApiVersion ours = parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20");
        std::string why = api_mismatch("h", parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=0 C++20"), ours);
        CPPUNIT_ASSERT_MESSAGE(why, contains(why, "was built with libstdc++/_GLIBCXX_USE_CXX11_ABI=0 (C++20), this "
                                                  "mod_esmtp with libstdc++/_GLIBCXX_USE_CXX11_ABI=1 (C++20)"));
        why = api_mismatch("h", parsed("2.1 libc++/_LIBCPP_ABI_VERSION=1 C++20"), ours);
        CPPUNIT_ASSERT_MESSAGE(why, contains(why, "with libc++/_LIBCPP_ABI_VERSION=1 (C++20), this mod_esmtp with "
                                                  "libstdc++"));
    }
    // The standard is recorded and shown, not compared: one library keeps
    // one layout across -std modes.
    void testOtherStandardRuns()
    {
        ApiVersion ours = parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++20");
        CPPUNIT_ASSERT_EQUAL(std::string(),
                             api_mismatch("h", parsed("2.3 libstdc++/_GLIBCXX_USE_CXX11_ABI=1 C++17"), ours));
    }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ApiVersionTest);
