// seccomp_deny: runs a program with some system calls failing with a chosen errno, so that
// a test can show what a tool says on a kernel without a feature (check_version.py: io_uring
// disabled, a register opcode the kernel does not know).
//   seccomp_deny io_uring_setup=ENOSYS -- ringmux-serve --version
//   seccomp_deny io_uring_register:22=EINVAL -- ringmux-serve --version
// A rule is NAME=ERRNO (every call) or NAME:N=ERRNO (calls whose second argument is N).
// Exits 77 where the filter cannot be built (an architecture it does not know).
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

#if defined(__x86_64__)
constexpr uint32_t audit_arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t audit_arch = AUDIT_ARCH_AARCH64;
#else
constexpr uint32_t audit_arch = 0;
#endif

// The calls a rule may name, and the errnos it may return: what check_version.py needs.
struct Named {
  const char* name;
  int value;
};
constexpr Named syscalls[] = {{"io_uring_setup", __NR_io_uring_setup}, {"io_uring_register", __NR_io_uring_register}};
constexpr Named errnos[] = {{"ENOSYS", ENOSYS}, {"EPERM", EPERM}, {"EINVAL", EINVAL}};

int lookup(const std::string& name, const Named* table, std::size_t count) {
  for (std::size_t i = 0; i < count; i++) {
    if (name == table[i].name) return table[i].value;
  }
  std::fprintf(stderr, "seccomp_deny: unknown name '%s'\n", name.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (audit_arch == 0) {
    std::fprintf(stderr, "seccomp_deny: skipped: no seccomp architecture for this machine\n");
    return 77;
  }
  std::vector<sock_filter> filter = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, audit_arch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  int i = 1;
  for (; i < argc && std::strcmp(argv[i], "--") != 0; i++) {
    const std::string rule = argv[i];
    const auto eq = rule.find('=');
    const auto colon = rule.find(':');
    if (eq == std::string::npos) return std::fprintf(stderr, "seccomp_deny: bad rule '%s'\n", argv[i]), 2;
    const int nr = lookup(rule.substr(0, std::min(colon, eq)), syscalls, std::size(syscalls));
    const int error = lookup(rule.substr(eq + 1), errnos, std::size(errnos));
    const auto ret_errno = static_cast<uint32_t>(SECCOMP_RET_ERRNO | (error & SECCOMP_RET_DATA));
    filter.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
    if (colon == std::string::npos) {
      filter.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1));
      filter.push_back(BPF_STMT(BPF_RET | BPF_K, ret_errno));
    } else {
      const auto argument = static_cast<uint32_t>(std::stoul(rule.substr(colon + 1, eq - colon - 1)));
      filter.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 3));
      filter.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])));  // low half
      filter.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, argument, 0, 1));
      filter.push_back(BPF_STMT(BPF_RET | BPF_K, ret_errno));
    }
  }
  filter.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  if (i + 1 >= argc) return std::fprintf(stderr, "usage: seccomp_deny RULE... -- PROGRAM [ARG...]\n"), 2;
  const sock_fprog program{static_cast<unsigned short>(filter.size()), filter.data()};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
    std::fprintf(stderr, "seccomp_deny: skipped: seccomp: %s\n", std::strerror(errno));
    return 77;
  }
  execvp(argv[i + 1], argv + i + 1);
  std::fprintf(stderr, "seccomp_deny: %s: %s\n", argv[i + 1], std::strerror(errno));
  return 127;
}
