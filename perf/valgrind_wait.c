// LD_PRELOAD for a ringmux program whose event loop runs on a thread of its own, under
// valgrind 3.19 (perf/callgrind.sh runs ringmux-serve with it).
//
// Why: valgrind runs one guest thread at a time and lets the others run only while the
// running one is in a system call it knows may block. 3.19 does not count io_uring_enter
// among those, so a loop thread waiting in io_uring_enter keeps every other thread out:
// ringmux-serve's main thread never gets to ask the loop to listen, and the loop waits for
// that request for ever (seen: the loop thread in io_cqring_wait, the main thread waiting
// for valgrind's lock). A loop on the program's only thread (ringmux-loadgen's client)
// runs fine.
//
// What: the loop's one blocking call, io_uring_submit_and_wait_timeout, becomes "submit;
// then until a completion is ready or the timeout passes, reap without waiting and sleep
// wait_sleep_ns" (nanosleep is a call valgrind knows blocks, so the other threads run);
// then the real call with a zero timeout collects what is ready. Everything the loop asks
// of the kernel stays the same; only the way it waits changes. The polling is done here,
// with raw system calls, so its instructions land in this object's valgrind_wait_poll and
// nowhere else: a profile can leave them out by that name.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <liburing.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>

// How long the loop sleeps between two looks at its completion queue: short against a
// call's round trip under valgrind (hundreds of microseconds), long enough that the
// polling costs little.
static const long wait_sleep_ns = 20 * 1000;

typedef int (*submit_and_wait_timeout_fn)(struct io_uring*, struct io_uring_cqe**, unsigned,
                                          struct __kernel_timespec*, sigset_t*);

static long raw_syscall6(long number, long a1, long a2, long a3, long a4, long a5, long a6) {
  long result;
  register long r10 __asm__("r10") = a4;
  register long r8 __asm__("r8") = a5;
  register long r9 __asm__("r9") = a6;
  __asm__ volatile("syscall"
                   : "=a"(result)
                   : "a"(number), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return result;
}

static uint64_t now_ns(void) {
  struct timespec now;
  raw_syscall6(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&now, 0, 0, 0, 0);
  return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

// The polling, in a function of its own: callgrind_annotate adds up functions of the same
// name from different objects, so the wrapper below (named as liburing's function) does
// nothing but call this and liburing.
__attribute__((noinline)) static void valgrind_wait_poll(struct io_uring* ring, unsigned wait_nr,
                                                         const struct __kernel_timespec* ts) {
  const uint64_t deadline_ns =
      ts == NULL ? UINT64_MAX : now_ns() + (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
  const struct timespec pause = {0, wait_sleep_ns};
  while (io_uring_cq_ready(ring) < wait_nr && now_ns() < deadline_ns) {
    // Runs the ring's deferred task work and flushes overflowed completions, waiting for none.
    raw_syscall6(SYS_io_uring_enter, ring->ring_fd, 0, 0, IORING_ENTER_GETEVENTS, 0, 0);
    if (io_uring_cq_ready(ring) >= wait_nr) break;
    raw_syscall6(SYS_nanosleep, (long)&pause, 0, 0, 0, 0, 0);
  }
}

int io_uring_submit_and_wait_timeout(struct io_uring* ring, struct io_uring_cqe** cqe_ptr, unsigned wait_nr,
                                     struct __kernel_timespec* ts, sigset_t* sigmask) {
  static submit_and_wait_timeout_fn real = NULL;
  if (real == NULL) real = (submit_and_wait_timeout_fn)dlsym(RTLD_NEXT, "io_uring_submit_and_wait_timeout");
  if (real == NULL) abort();
  io_uring_submit(ring);
  valgrind_wait_poll(ring, wait_nr, ts);
  struct __kernel_timespec zero = {0, 0};
  return real(ring, cqe_ptr, wait_nr, &zero, sigmask);
}
