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
                             "--port", "--output-format", "--plot", "--help", "--time_based", "--stonewall",
                             "--kb_base", "--write_lat_log", "--write_bw_log", "--write_iops_log", "--log_avg_msec",
                             "--output=", "--status-interval", "json+", "include FILE", "${NAME}"}) {
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

// Proves fio's size rules: k/m/g... (and kb, ki) multiply by kb_base, kib/mib... by the
// other base, which is how fio 3.33 reads them (checked against fio itself: --size=1mib is
// 1,000,000 bytes with kb_base=1024, and 1,048,576 with kb_base=1000).
TEST_CASE("loadgen job: fio's sizes and kb_base") {
  CHECK(parse_fio_size("4k", 1024) == 4096u);
  CHECK(parse_fio_size("4K", 1024) == 4096u);
  CHECK(parse_fio_size("4kb", 1024) == 4096u);
  CHECK(parse_fio_size("4ki", 1024) == 4096u);
  CHECK(parse_fio_size("4kib", 1024) == 4000u);
  CHECK(parse_fio_size("4KiB", 1024) == 4000u);
  CHECK(parse_fio_size("1mib", 1024) == 1000000u);
  CHECK(parse_fio_size("1m", 1024) == 1048576u);
  CHECK(parse_fio_size("1g", 1024) == 1073741824u);
  CHECK(parse_fio_size("1t", 1024) == 1099511627776u);
  CHECK(parse_fio_size("1p", 1024) == 1125899906842624u);
  CHECK(parse_fio_size("4k", 1000) == 4000u);
  CHECK(parse_fio_size("4kib", 1000) == 4096u);
  CHECK(parse_fio_size("1mi", 1000) == 1000000u);
  CHECK(parse_fio_size("100", 1024) == 100u);
  CHECK(parse_fio_size("100b", 1024) == 100u);
  CHECK(parse_fio_size("1.5k", 1024) == 1536u);
  CHECK(!parse_fio_size("4kx", 1024));
  CHECK(!parse_fio_size("4kibb", 1024));
  CHECK(!parse_fio_size("4q", 1024));
  CHECK(!parse_fio_size("4k", 1023));
  // kb_base applies to the sizes after it, and is inherited from the globals.
  const Invocation inv = parse_ok({"--kb_base=1000", "--runtime=1", "--bs=4k", "--name=a", "--size=1m", "--name=b",
                                   "--kb_base=1024", "--bs=4kib", "--bssplit=1k/50:2kib/50"});
  CHECK(inv.jobs[0].bs == 4000u);
  CHECK(inv.jobs[0].size_bytes == 1000000u);
  CHECK(inv.jobs[1].bs == 4000u);
  CHECK(inv.jobs[1].bssplit[0].bytes == 1024u);
  CHECK(inv.jobs[1].bssplit[1].bytes == 2000u);
  CHECK(parse_error({"--runtime=1", "--kb_base=1001"}) == "command line: option 'kb_base': '1001' is not 1000 or 1024");
  CHECK(parse_duration_ns("1d") == 86'400'000'000'000u);
}

// Proves the fio options of issue 14 parse into the job and invocation, and each misuse is
// refused naming the option or the rule.
TEST_CASE("loadgen job: output, status, logs, time_based, stonewall") {
  const Invocation inv = parse_ok({"--output-format=normal,json+", "--output=r.txt", "--status-interval=2s",
                                   "--runtime=3", "--name=a", "--time_based", "--size=1m", "--write_lat_log",
                                   "--write_bw_log=bw", "--log_avg_msec=250", "--name=b", "--stonewall"});
  CHECK(inv.output_formats == (static_cast<OutputFormats>(OutputFormat::normal) |
                               static_cast<OutputFormats>(OutputFormat::json_plus)));
  CHECK(inv.output_path == "r.txt");
  CHECK(inv.status_interval_ns == 2'000'000'000u);
  REQUIRE(inv.jobs.size() == 2);
  CHECK(inv.jobs[0].time_based);
  CHECK(inv.jobs[0].lat_log_prefix == "");
  CHECK(inv.jobs[0].bw_log_prefix == "bw");
  CHECK(!inv.jobs[0].iops_log_prefix);
  CHECK(inv.jobs[0].log_avg_ns == 250'000'000u);
  CHECK(!inv.jobs[0].stonewall);
  CHECK(inv.jobs[1].stonewall);
  CHECK(job_groups(inv) == std::vector<uint32_t>{0, 1});
  // What was given, as given: global options, then each job's own (name first).
  CHECK(inv.global_options.front() == std::pair<std::string, std::string>{"output-format", "normal,json+"});
  CHECK(inv.jobs[0].options_given.front() == std::pair<std::string, std::string>{"name", "a"});
  CHECK(inv.jobs[1].options_given.size() == 2);
  CHECK(parse_error({"--runtime=1", "--output-format=json,xml"}) ==
        "command line: option 'output-format': 'json,xml' is not a comma-separated list of normal, json, json+, terse");
  CHECK(parse_error({"--runtime=1", "--status-interval=10ms"}).find("at least 100ms") != std::string::npos);
  CHECK(parse_error({"--size=1m", "--time_based"}) ==
        "command line: job 'job1': time_based needs runtime (it runs for runtime whatever size says)");
  CHECK(parse_error({"--runtime=24h", "--log_avg_msec=1"}).find("runtime / log_avg_msec is over 4194304 windows") !=
        std::string::npos);
  CHECK(parse_error({"--runtime=1", "--ioengine=tcp", "--resp_bs=0"}).find("ioengine=tcp cannot carry resp_bs=0") !=
        std::string::npos);
  CHECK(parse_ok({"--runtime=1", "--ioengine=tcp", "--resp_bs=1"}).jobs[0].response_bytes() == 1u);
}

namespace {

// Job files and environment for the include and ${ENV} tests, without touching the disk.
bool fake_read(const std::string& path, std::string& text) {
  if (path == "dir/common.fio") text = "[global]\nbs=${BS}\n";
  else if (path == "dir/depth.fio") text = "iodepth=${DEPTH}\ninclude deeper.fio\n";
  else if (path == "dir/deeper.fio") text = "numjobs=2\n";
  else if (path == "dir/loop.fio") text = "include loop.fio\n";
  else return false;
  return true;
}
const char* fake_env(const char* name) {
  if (std::string(name) == "BS") return "512";
  if (std::string(name) == "DEPTH") return "8";
  return nullptr;
}

}  // namespace

// Proves `include` reads a file relative to the including one (nested too) into the
// current section, ${NAME} takes the environment's value, and each failure names the file,
// the line and the cause (an unset variable, a file that cannot be read, endless nesting).
TEST_CASE("loadgen job: include and environment variables") {
  const std::string text = "include common.fio\n[a]\nruntime=1\ninclude depth.fio\nrw=unary\n";
  auto parsed = parse_job_file(text, "dir/main.fio", {}, &fake_read, &fake_env);
  INFO(parsed.error.message);
  REQUIRE(parsed.ok());
  REQUIRE(parsed.value->jobs.size() == 1);
  const Job& job = parsed.value->jobs[0];
  CHECK(job.bs == 512u);
  CHECK(job.iodepth == 8u);
  CHECK(job.numjobs == 2u);
  auto unset = parse_job_file("[a]\nruntime=${NOPE}\n", "dir/x.fio", {}, &fake_read, &fake_env);
  REQUIRE(!unset.ok());
  CHECK(unset.error.message == "job file dir/x.fio line 2: ${NOPE} is not set in the environment");
  auto open_brace = parse_job_file("[a]\nruntime=${NOPE\n", "dir/x.fio", {}, &fake_read, &fake_env);
  REQUIRE(!open_brace.ok());
  CHECK(open_brace.error.message == "job file dir/x.fio line 2: '${' without its '}'");
  auto missing = parse_job_file("[a]\nruntime=1\ninclude gone.fio\n", "dir/x.fio", {}, &fake_read, &fake_env);
  REQUIRE(!missing.ok());
  CHECK(missing.error.message == "job file dir/x.fio line 3: include dir/gone.fio: cannot be read");
  auto endless = parse_job_file("[a]\nruntime=1\ninclude loop.fio\n", "dir/x.fio", {}, &fake_read, &fake_env);
  REQUIRE(!endless.ok());
  CHECK(endless.error.message.find("more than 16 files deep") != std::string::npos);
}

// Proves job files keep fio's order after the command line's jobs, each file starting from
// the command line's globals: the base invocation's jobs come first.
TEST_CASE("loadgen job: job file jobs follow the jobs before them") {
  Invocation base;
  base.global.runtime_ns = 1'000'000'000;
  base.jobs.push_back(base.global);
  base.jobs.back().name = "command_line";
  auto parsed = parse_job_file("[one]\n[two]\nstonewall\n", "f.fio", base);
  INFO(parsed.error.message);
  REQUIRE(parsed.ok());
  REQUIRE(parsed.value->jobs.size() == 3);
  CHECK(parsed.value->jobs[0].name == "command_line");
  CHECK(parsed.value->jobs[1].name == "one");
  CHECK(parsed.value->jobs[2].name == "two");
  CHECK(job_groups(*parsed.value) == std::vector<uint32_t>{0, 0, 1});
  CHECK(parsed.value->jobs[1].options_given == std::vector<std::pair<std::string, std::string>>{{"name", "one"}});
}
