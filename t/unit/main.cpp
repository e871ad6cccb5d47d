// The unit-test runner: every suite registered with CPPUNIT_TEST_SUITE_REGISTRATION.
//
// Usage: run_unit_tests [TEST_PATH]   (e.g. "SessionTest" or "SessionTest::testGreeting")
// Prints "N passed, N failed" last and exits non-zero when a test failed.

#include <cppunit/Test.h>
#include <cppunit/TestFailure.h>
#include <cppunit/TestListener.h>
#include <cppunit/TestResult.h>
#include <cppunit/extensions/TestFactoryRegistry.h>
#include <cppunit/ui/text/TestRunner.h>

#include <cstdio>
#include <exception>
#include <string>

namespace
{

// Counts test cases, and test cases with at least one failure or error.
class CountingListener : public CppUnit::TestListener
{
  public:
    void startTest(CppUnit::Test *) override
    {
        ++run_;
        current_failed_ = false;
    }
    void addFailure(const CppUnit::TestFailure &) override
    {
        if (!current_failed_) {
            current_failed_ = true;
            ++failed_;
        }
    }

    unsigned run() const { return run_; }
    unsigned failed() const { return failed_; }

  private:
    unsigned run_ = 0;
    unsigned failed_ = 0;
    bool current_failed_ = false;
};

} // namespace

int main(int argc, char **argv)
{
    std::string path = argc > 1 ? argv[1] : "";

    CppUnit::TextUi::TestRunner runner;
    runner.addTest(CppUnit::TestFactoryRegistry::getRegistry().makeTest());

    CountingListener counter;
    runner.eventManager().addListener(&counter);

    bool ok = false;
    try {
        ok = runner.run(path, false, true, false);
    } catch (const std::exception &e) {
        // An unknown test path makes the runner throw std::invalid_argument.
        std::fprintf(stderr, "run_unit_tests: %s\n", e.what());
        return 2;
    }

    std::printf("%u passed, %u failed\n", counter.run() - counter.failed(), counter.failed());
    return ok && counter.failed() == 0 ? 0 : 1;
}
