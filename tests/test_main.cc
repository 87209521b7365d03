// The main of every GoogleTest program here: runs the tests, then ends the process without
// destroying static objects. ONNX Runtime's environment is created once per process and its
// threads live until exit; C++ static destruction at exit could free what such a thread still
// touches (AddressSanitizer reports it as a use after free). Under LeakSanitizer the leak check
// that exit would run is run here first, so leaks are still found.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#if defined(__SANITIZE_ADDRESS__)
#define LOOM_LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define LOOM_LEAK_CHECK 1
#endif
#endif
#if defined(LOOM_LEAK_CHECK)
#include <sanitizer/lsan_interface.h>
#endif

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  std::fflush(nullptr);
#if defined(LOOM_LEAK_CHECK)
  __lsan_do_leak_check();  // ends the process with LSan's exit code when something leaked
#endif
  std::_Exit(rc);
}
