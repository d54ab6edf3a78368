// ringmux-loadgen: fio-style load for ringmux (see --help, tools/loadgen/job.h).
//   ringmux-loadgen --rw=unary --bs=64 --iodepth=64 --runtime=5
//   ringmux-loadgen --host=127.0.0.1 --port=7300 --rw=write --bs=64k --runtime=10 --output-format=json
// Without --host an embedded server runs in this process, pinned to CPU 1, on loopback.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/loadgen/job.h"
#include "tools/loadgen/run.h"
#include "tools/version.h"

using namespace ringmux::loadgen;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--version") != args.end()) {
    std::fputs(ringmux::tools::version_text("ringmux-loadgen").c_str(), stdout);
    return 0;
  }
  auto parsed = parse_command_line(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "ringmux-loadgen: %s\n", parsed.error.message.c_str());
    return 2;
  }
  Invocation& invocation = *parsed.value;
  if (invocation.help) {
    std::fputs(help_text().c_str(), stdout);
    return 0;
  }
  return run_invocation(invocation);
}
