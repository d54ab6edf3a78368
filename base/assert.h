// Always-on assertions for programmer errors.
//
// RM_ASSERT stays enabled in release builds: a violated invariant in a transport that
// moves storage data must stop the process, not corrupt bytes quietly. RM_DEBUG_ASSERT
// is for checks too expensive for the data path; it compiles away when NDEBUG is set.
// Callable from any thread.
#pragma once

namespace ringmux {

// Prints "file:line: assertion failed: expr" to stderr and aborts. Never returns.
[[noreturn]] void assert_fail(const char* expr, const char* file, int line) noexcept;

}  // namespace ringmux

#define RM_ASSERT(cond) \
  (__builtin_expect(static_cast<bool>(cond), 1) ? (void)0 : ::ringmux::assert_fail(#cond, __FILE__, __LINE__))

#ifdef NDEBUG
#define RM_DEBUG_ASSERT(cond) ((void)0)
#else
#define RM_DEBUG_ASSERT(cond) RM_ASSERT(cond)
#endif
