// ringmux-loadgen's job model: every option on the command line and in job files, the
// value syntaxes (sizes, durations, lists), and every error naming its option and line.
#include "tools/loadgen/job.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace ringmux::loadgen;

namespace {

Invocation parse_ok(const std::vector<std::string>& args) {
  auto parsed = parse_command_line(args);
  INFO(parsed.error.message);
  REQUIRE(parsed.ok());
  return *parsed.value;
}

std::string parse_error(const std::vector<std::string>& args) {
  auto parsed = parse_command_line(args);
  REQUIRE(!parsed.ok());
  return parsed.error.message;
}

}  // namespace

// Proves the value syntaxes follow fio: 1024-based sizes, seconds by default.
TEST_CASE("loadgen job: sizes, durations, lists") {
  CHECK(parse_size("4k") == 4096u);
  CHECK(parse_size("64KiB") == 65536u);
  CHECK(parse_size("1m") == 1048576u);
  CHECK(parse_size("1.5k") == 1536u);
  CHECK(parse_size("2g") == 2147483648u);
  CHECK(parse_size("100") == 100u);
  CHECK(!parse_size("12q"));
  CHECK(!parse_size(""));
  CHECK(!parse_size("-4k"));
  CHECK(!parse_size("0.3"));  // not a whole number of bytes
  CHECK(parse_duration_ns("30") == 30'000'000'000u);
  CHECK(parse_duration_ns("500ms") == 500'000'000u);
  CHECK(parse_duration_ns("2m") == 120'000'000'000u);
  CHECK(parse_duration_ns("250us") == 250'000u);
  CHECK(!parse_duration_ns("5 parsecs"));
  CHECK(parse_cpu_list("0,2-3") == std::vector<int>{0, 2, 3});
  CHECK(!parse_cpu_list("3-1"));
  CHECK(!parse_cpu_list("a"));
  CHECK(parse_percentiles("99.9:50:99") == std::vector<double>{50, 99, 99.9});
  CHECK(!parse_percentiles("50:101"));
  auto split = parse_bssplit("4k/25:64k/75");
  REQUIRE(split);
  CHECK(split->size() == 2);
  CHECK((*split)[1].bytes == 65536u);
  CHECK(!parse_bssplit("4k/50:64k/40"));  // does not add up to 100
  CHECK(!parse_bssplit("4k"));
}

// Proves every job option is understood on the command line and lands in the job.
TEST_CASE("loadgen job: every option on the command line") {
  const Invocation inv = parse_ok({"--name=probe", "--rw=bidi", "--bs=64k", "--resp_bs=128", "--bssplit=4k/50:8k/50",
                                   "--iodepth=64", "--streams=8", "--numjobs=2", "--runtime=10s", "--ramp_time=1",
                                   "--size=1g", "--verify=1", "--percentile_list=50:99", "--cpus_allowed=0",
                                   "--ioengine=tcp", "--group_reporting", "--own_connection", "--host=127.0.0.1",
                                   "--port=9000", "--output-format=json", "--plot=out.svg"});
  REQUIRE(inv.jobs.size() == 1);
  const Job& job = inv.jobs[0];
  CHECK(job.name == "probe");
  CHECK(job.rw == RwMode::bidi);
  CHECK(job.bs == 65536u);
  CHECK(job.response_bytes() == 128u);
  CHECK(job.bssplit.size() == 2);
  CHECK(job.iodepth == 64u);
  CHECK(job.streams == 8u);
  CHECK(job.numjobs == 2u);
  CHECK(job.runtime_ns == 10'000'000'000u);
  CHECK(job.ramp_time_ns == 1'000'000'000u);
  CHECK(job.size_bytes == (1ull << 30));
  CHECK(job.verify);
  CHECK(job.percentile_list == std::vector<double>{50, 99});
  CHECK(job.cpus_allowed == std::vector<int>{0});
  CHECK(job.ioengine == IoEngine::tcp);
  CHECK(job.group_reporting);
  CHECK(job.own_connection);
  CHECK(inv.host == "127.0.0.1");
  CHECK(inv.port == 9000);
  CHECK(inv.output_formats == static_cast<OutputFormats>(OutputFormat::json));
  CHECK(inv.plot_path == "out.svg");
  const Invocation unary = parse_ok({"--rw=unary", "--rate_iops=1000", "--runtime=1"});
  CHECK(unary.jobs[0].rate_iops == 1000u);
  CHECK(unary.jobs[0].name == "job1");
  CHECK(unary.jobs[0].response_bytes() == 4096u);  // resp_bs defaults to bs
}

// Proves options before --name are global and each --name starts a job from them.
TEST_CASE("loadgen job: globals and several jobs on the command line") {
  const Invocation inv = parse_ok({"--runtime=5", "--bs=512", "--name=bulk", "--rw=write", "--bs=64k", "--name=probe"});
  REQUIRE(inv.jobs.size() == 2);
  CHECK(inv.jobs[0].name == "bulk");
  CHECK(inv.jobs[0].bs == 65536u);
  CHECK(inv.jobs[0].rw == RwMode::write);
  CHECK(inv.jobs[1].name == "probe");
  CHECK(inv.jobs[1].bs == 512u);
  CHECK(inv.jobs[1].rw == RwMode::unary);
  CHECK(inv.jobs[1].runtime_ns == 5'000'000'000u);
}

// Proves each bad value gets an error naming the option and what was expected.
TEST_CASE("loadgen job: command-line errors name the option") {
  CHECK(parse_error({"--runtime=1", "--bs=12q"}) == "command line: option 'bs': '12q' is not a size between 1 and 67108864 bytes");
  CHECK(parse_error({"--runtime=1", "--rw=randread"}).find("option 'rw'") != std::string::npos);
  CHECK(parse_error({"--runtime=1", "--iodepth=0"}).find("option 'iodepth'") != std::string::npos);
  CHECK(parse_error({"--runtime=1", "--ioengine=libaio"}).find("one of ringmux, tcp") != std::string::npos);
  CHECK(parse_error({"--runtime=soon"}).find("option 'runtime'") != std::string::npos);
  CHECK(parse_error({"--runtime=1", "--port=70000"}).find("option 'port'") != std::string::npos);
  CHECK(parse_error({"--runtime=1", "--verify=maybe"}).find("a boolean") != std::string::npos);
  CHECK(parse_error({"--runtime=1", "--output-format=xml"}).find("option 'output-format'") != std::string::npos);
  CHECK(parse_error({"--runtime=1", "--frobnicate=1"}) == "command line: unknown option 'frobnicate' (see --help)");
  CHECK(parse_error({"--bs=4k"}) == "command line: job 'job1': set runtime or size (or both)");
  CHECK(parse_error({"--runtime=1", "--rw=write", "--rate_iops=5"}).find("rate_iops applies to rw=unary") !=
        std::string::npos);
  CHECK(parse_error({"/nonexistent/job.fio"}) == "job file /nonexistent/job.fio: cannot be read (No such file or directory)");
  // Sizes that cannot carry what the message must: the unary preamble, a verify stamp.
  CHECK(parse_error({"--runtime=1", "--bs=7"}) ==
        "command line: job 'job1': bs 7 is below 8 bytes, the least a unary request carries");
  CHECK(parse_error({"--runtime=1", "--rw=write", "--bs=31", "--verify=1"}) ==
        "command line: job 'job1': bs 31 is below 32 bytes, the least a message with verify carries");
  CHECK(parse_error({"--runtime=1", "--rw=write", "--bs=4k", "--bssplit=16/50:4k/50", "--verify=1"}).find("bs 16 is below") !=
        std::string::npos);
  CHECK(parse_error({"--runtime=1", "--bs=64", "--resp_bs=16", "--verify=1"}).find("resp_bs below 32") !=
        std::string::npos);
  CHECK(parse_ok({"--runtime=1", "--rw=write", "--bs=32", "--verify=1"}).jobs[0].verify);
}

// Proves the INI job file form: [global] defaults, named sections, comments, flags.
TEST_CASE("loadgen job: job files") {
  const std::string text =
      "; W5: a bulk stream and a latency probe on one connection\n"
      "[global]\n"
      "runtime=10\n"
      "ramp_time=2\n"
      "\n"
      "[bulk]\n"
      "rw=write\n"
      "bs=64k\n"
      "# the probe\n"
      "[probe]\n"
      "rw=unary\n"
      "bs=64\n"
      "group_reporting\n";
  auto parsed = parse_job_file(text, "w5.fio");
  INFO(parsed.error.message);
  REQUIRE(parsed.ok());
  const Invocation& inv = *parsed.value;
  REQUIRE(inv.jobs.size() == 2);
  CHECK(inv.jobs[0].name == "bulk");
  CHECK(inv.jobs[0].rw == RwMode::write);
  CHECK(inv.jobs[0].bs == 65536u);
  CHECK(inv.jobs[0].runtime_ns == 10'000'000'000u);
  CHECK(inv.jobs[1].name == "probe");
  CHECK(inv.jobs[1].bs == 64u);
  CHECK(inv.jobs[1].group_reporting);
  CHECK(inv.jobs[1].ramp_time_ns == 2'000'000'000u);
}

// Proves job-file errors name the file, the line and the option.
TEST_CASE("loadgen job: job-file errors name the file and line") {
  auto bad_value = parse_job_file("[global]\nruntime=1\n[a]\nbs=lots\n", "x.fio");
  REQUIRE(!bad_value.ok());
  CHECK(bad_value.error.message == "job file x.fio line 4: option 'bs': 'lots' is not a size between 1 and 67108864 bytes");
  auto unknown = parse_job_file("[a]\nruntime=1\nspeed=fast\n", "x.fio");
  REQUIRE(!unknown.ok());
  CHECK(unknown.error.message == "job file x.fio line 3: unknown option 'speed' (see --help)");
  auto header = parse_job_file("[a\nruntime=1\n", "x.fio");
  REQUIRE(!header.ok());
  CHECK(header.error.message.find("line 1: malformed section header") != std::string::npos);
  auto late_global = parse_job_file("[a]\nruntime=1\n[global]\nbs=1\n", "x.fio");
  REQUIRE(!late_global.ok());
  CHECK(late_global.error.message.find("line 3: [global] must come before the jobs") != std::string::npos);
  auto no_runtime = parse_job_file("[a]\nbs=1\n", "x.fio");
  REQUIRE(!no_runtime.ok());
  CHECK(no_runtime.error.message == "job file x.fio: job 'a': set runtime or size (or both)");
}

// Proves --help documents every option the parser accepts.
TEST_CASE("loadgen job: help lists every option") {
  const std::string help = help_text();
  for (const char* option : {"--rw", "--bs", "--resp_bs", "--bssplit", "--iodepth", "--streams", "--numjobs",
                             "--runtime", "--ramp_time", "--size", "--rate_iops", "--verify", "--percentile_list",
                             "--cpus_allowed", "--ioengine", "--group_reporting", "--own_connection", "--host",
                             "--port", "--output-format", "--plot", "--help"}) {
    CHECK_MESSAGE(help.find(option) != std::string::npos, option);
  }
  CHECK(parse_ok({"--help"}).help);
}

// Proves the quorum options (rw=quorum, peers, quorum, deadline) parse, and that each
// misuse is refused with an error naming the option or the rule.
TEST_CASE("loadgen job: quorum options and their errors") {
  const Invocation inv = parse_ok({"--rw=quorum", "--peers=127.0.0.1:7411,127.0.0.1:7412,10.0.0.3:99", "--quorum=2",
                                   "--deadline=250ms", "--runtime=1"});
  REQUIRE(inv.jobs.size() == 1);
  CHECK(inv.jobs[0].rw == RwMode::quorum);
  CHECK(inv.jobs[0].peers == std::vector<std::string>{"127.0.0.1:7411", "127.0.0.1:7412", "10.0.0.3:99"});
  CHECK(inv.jobs[0].quorum == "2");
  CHECK(inv.jobs[0].deadline_ns == 250'000'000u);
  CHECK(parse_ok({"--rw=quorum", "--peers=127.0.0.1:1", "--runtime=1"}).jobs[0].quorum == "majority");
  CHECK(parse_ok({"--rw=quorum", "--peers=127.0.0.1:1", "--runtime=1"}).jobs[0].deadline_ns == 1'000'000'000u);
  CHECK(parse_error({"--rw=quorum", "--runtime=1"}) == "command line: job 'job1': rw=quorum needs --peers");
  CHECK(parse_error({"--rw=quorum", "--peers=127.0.0.1:1", "--quorum=most", "--runtime=1"}) ==
        "command line: option 'quorum': 'most' is not majority, all, first or a count");
  CHECK(parse_error({"--rw=quorum", "--peers=127.0.0.1:1,127.0.0.1:2", "--quorum=3", "--runtime=1"}) ==
        "command line: job 'job1': quorum 3 is more than the 2 peers");
  CHECK(parse_error({"--rw=quorum", "--peers=127.0.0.1:", "--runtime=1"}).find("option 'peers'") != std::string::npos);
  CHECK(parse_error({"--rw=quorum", "--peers=127.0.0.1:1", "--deadline=0", "--runtime=1"}).find("option 'deadline'") !=
        std::string::npos);
  CHECK(parse_error({"--rw=quorum", "--peers=127.0.0.1:1", "--ioengine=tcp", "--runtime=1"}) ==
        "command line: job 'job1': rw=quorum runs on ioengine=ringmux only");
  CHECK(parse_error({"--rw=quorum", "--peers=127.0.0.1:1", "--verify=1", "--runtime=1"}) ==
        "command line: job 'job1': verify does not apply to rw=quorum");
  CHECK(parse_error({"--rw=write", "--peers=127.0.0.1:1", "--runtime=1"}) ==
        "command line: job 'job1': peers apply to rw=quorum only");
}
