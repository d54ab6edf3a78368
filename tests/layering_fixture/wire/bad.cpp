// Fixture for the layering check: this file breaks the rule on purpose, and the check
// must reject it (the meson test "layering_rejects_violation" expects failure).
#include <liburing.h>

int leak_a_syscall(int fd) { return ::send(fd, nullptr, 0, 0); }
