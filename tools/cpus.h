// The CPUs this process may run on (sched_getaffinity: the machine's, narrowed by taskset,
// cgroups or a container), and the check the tools make of a CPU list option against
// them, so that --cpus=7 on a 2-CPU machine is an error that says so instead of a failed
// pinning later. Call from main() before threads are pinned.
#pragma once

#include <sched.h>

#include <string>
#include <vector>

namespace ringmux::tools {

// "0-1,4": the CPUs of `set` as ranges.
inline std::string cpu_set_text(const cpu_set_t& set) {
  std::string text;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (!CPU_ISSET(cpu, &set)) continue;
    int last = cpu;
    while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set)) last++;
    if (!text.empty()) text += ",";
    text += std::to_string(cpu);
    if (last > cpu) {
      text += '-';
      text += std::to_string(last);
    }
    cpu = last;
  }
  return text;
}

// "" when this process may run on every CPU of `cpus` (or when the kernel does not say
// which it may run on: the pinning then reports its own error); otherwise the error:
// "CPU 7 is not one this process may run on (it may run on 0-1)".
inline std::string cpus_not_allowed(const std::vector<int>& cpus) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return "";
  for (const int cpu : cpus) {
    if (cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed)) continue;
    return "CPU " + std::to_string(cpu) + " is not one this process may run on (it may run on " +
           cpu_set_text(allowed) + ")";
  }
  return "";
}

}  // namespace ringmux::tools
