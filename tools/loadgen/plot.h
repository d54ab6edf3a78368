// --plot of ringmux-loadgen: an SVG with one latency-by-percentile curve per job, written
// by hand (no dependency). The x axis is the percentile on a "nines" scale, where each step
// is one more nine (0, 90, 99, 99.9, ...: position = -log10(1 - p/100)), so the tail gets
// as much room as the body; the y axis is the latency in microseconds on a log scale.
// A curve reaches as far right as its samples resolve (N samples: log10(N) nines, where the
// nearest-rank percentile is the maximum). Jobs without latency samples appear in the
// legend only.
//
// Main thread, after every job has ended.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tools/loadgen/result.h"

namespace ringmux::loadgen {

// The rightmost tick: seven nines (99.99999) needs 10^7 samples, more than a default run
// keeps for one job; beyond it the axis would only stretch the curves.
constexpr int plot_nines_max = 7;
// Points per curve: smooth at the plot's width, small enough for a quick file.
constexpr int plot_points_per_curve = 400;

// The SVG document. Sorts each result's latency samples (hence the non-const results).
std::string plot_latency_svg(const std::vector<JobResult>& results, std::string_view title);

// The plot's output file, opened before the run so that a path that cannot be written
// fails at once rather than after the run. If write() is never called (the run ended
// early), the destructor removes the empty file.
class PlotFile {
 public:
  // nullptr and `error` set ("cannot write '/x/y.svg': No such file or directory") when
  // the file cannot be created.
  static std::unique_ptr<PlotFile> open(const std::string& path, std::string& error);
  ~PlotFile();
  PlotFile(const PlotFile&) = delete;
  PlotFile& operator=(const PlotFile&) = delete;

  // Writes `text` and closes the file. "" on success, else the error (a short write, or a
  // failed close: a full disk shows at either). Called once (asserted).
  std::string write(std::string_view text);
  const std::string& path() const { return path_; }

 private:
  PlotFile(std::FILE* file, std::string path) : file_(file), path_(std::move(path)) {}
  std::FILE* file_;  // null once written
  std::string path_;
};

}  // namespace ringmux::loadgen
