#include "tools/loadgen/plot.h"

// GCC 12 at -O3 reports a false -Wrestrict inside std::string concatenation (GCC bug
// 105329); this file builds text by concatenation throughout.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "ringmux/base/assert.h"

namespace ringmux::loadgen {

namespace {

// Geometry, in SVG user units (pixels at 100 %). The legend sits right of the plot area
// and the document grows downwards when the legend needs more rows than the plot is tall.
constexpr double width = 980;
constexpr double plot_left = 90;
constexpr double plot_top = 60;
constexpr double plot_width = 600;
constexpr double plot_height = 440;
constexpr double plot_right = plot_left + plot_width;
constexpr double plot_bottom = plot_top + plot_height;
constexpr double legend_left = plot_right + 30;
constexpr double legend_row_height = 20;
constexpr double bottom_margin = 70;  // tick labels and the x axis label
static_assert(legend_left + 250 <= width, "the legend needs room for a name and its details");

// Matplotlib's "tab10": ten colours told apart easily; the eleventh job reuses the first.
constexpr const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr std::size_t palette_count = sizeof(palette) / sizeof(palette[0]);

std::string xml_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 allows no control characters but tab, newline and carriage return.
        out += static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r' ? ' ' : c;
    }
  }
  return out;
}

std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.1f", value);
  return buffer;
}

// "0", "90", "99", "99.9", "99.99", ... for 0, 1, 2, 3, 4, ... nines.
std::string nines_label(int nines) {
  if (nines == 0) return "0";
  if (nines == 1) return "90";
  std::string label = "99";
  if (nines > 2) label += "." + std::string(static_cast<std::size_t>(nines - 2), '9');
  return label;
}

// 10^exponent microseconds, written out: "0.01", "1", "1000".
std::string decade_label(int exponent) {
  if (exponent >= 0) return "1" + std::string(static_cast<std::size_t>(exponent), '0');
  return "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + "1";
}

const char* rw_text(RwMode rw) {
  switch (rw) {
    case RwMode::unary: return "unary";
    case RwMode::write: return "write";
    case RwMode::read: return "read";
    case RwMode::bidi: return "bidi";
    case RwMode::quorum: return "quorum";
  }
  return "?";
}

// Latency in microseconds for the log axis: 1 ns at least, so that log10 is finite.
double latency_us(uint64_t ns) { return static_cast<double>(std::max<uint64_t>(ns, 1)) / 1e3; }

}  // namespace

std::string plot_latency_svg(const std::vector<JobResult>& results, std::string_view title) {
  // The axes' ranges: as many nines as the largest job resolves, and whole decades around
  // every latency seen.
  double nines_seen = 0;
  double log_us_min = 0, log_us_max = 3;  // 1 us .. 1 ms when no job has samples
  bool any_samples = false;
  for (const JobResult& r : results) {
    if (r.latency.count() == 0) continue;
    nines_seen = std::max(nines_seen, std::log10(static_cast<double>(r.latency.count())));
    const double low = std::log10(latency_us(r.latency.min()));
    const double high = std::log10(latency_us(r.latency.max()));
    log_us_min = any_samples ? std::min(log_us_min, low) : low;
    log_us_max = any_samples ? std::max(log_us_max, high) : high;
    any_samples = true;
  }
  const int nines_max = std::clamp(static_cast<int>(std::ceil(nines_seen - 1e-9)), 1, plot_nines_max);
  const int decade_low = static_cast<int>(std::floor(log_us_min));
  const int decade_high = std::max(decade_low + 1, static_cast<int>(std::ceil(log_us_max)));

  auto x_of = [&](double nines) { return plot_left + nines / nines_max * plot_width; };
  auto y_of = [&](double us) {
    return plot_bottom - (std::log10(us) - decade_low) / (decade_high - decade_low) * plot_height;
  };

  const double legend_bottom = plot_top + static_cast<double>(results.size() + 1) * legend_row_height;
  const double height = std::max(plot_bottom, legend_bottom) + bottom_margin;
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + number(width) + "\" height=\"" + number(height) +
         "\" viewBox=\"0 0 " + number(width) + " " + number(height) +
         "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out += "  <title>" + xml_escape(title) + "</title>\n";
  out += "  <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out += "  <text x=\"" + number(plot_left + plot_width / 2) + "\" y=\"30\" text-anchor=\"middle\" font-size=\"16\">" +
         xml_escape(title) + "</text>\n";

  // Grid, ticks and tick labels.
  out += "  <g stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (int n = 0; n <= nines_max; n++) {
    out += "    <line x1=\"" + number(x_of(n)) + "\" y1=\"" + number(plot_top) + "\" x2=\"" + number(x_of(n)) +
           "\" y2=\"" + number(plot_bottom) + "\"/>\n";
  }
  for (int e = decade_low; e <= decade_high; e++) {
    const double y = y_of(std::pow(10.0, e));
    out += "    <line x1=\"" + number(plot_left) + "\" y1=\"" + number(y) + "\" x2=\"" + number(plot_right) +
           "\" y2=\"" + number(y) + "\"/>\n";
  }
  out += "  </g>\n  <g>\n";
  for (int n = 0; n <= nines_max; n++) {
    out += "    <text x=\"" + number(x_of(n)) + "\" y=\"" + number(plot_bottom + 18) + "\" text-anchor=\"middle\">" +
           nines_label(n) + "</text>\n";
  }
  for (int e = decade_low; e <= decade_high; e++) {
    out += "    <text x=\"" + number(plot_left - 8) + "\" y=\"" + number(y_of(std::pow(10.0, e)) + 4) +
           "\" text-anchor=\"end\">" + decade_label(e) + "</text>\n";
  }
  out += "  </g>\n";
  out += "  <rect x=\"" + number(plot_left) + "\" y=\"" + number(plot_top) + "\" width=\"" + number(plot_width) +
         "\" height=\"" + number(plot_height) + "\" fill=\"none\" stroke=\"black\"/>\n";
  out += "  <text x=\"" + number(plot_left + plot_width / 2) + "\" y=\"" + number(plot_bottom + 45) +
         "\" text-anchor=\"middle\">percentile (%), one step per nine</text>\n";
  out += "  <text x=\"25\" y=\"" + number(plot_top + plot_height / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 25 " +
         number(plot_top + plot_height / 2) + ")\">latency (\xC2\xB5s, log scale)</text>\n";

  // One curve per job, and its legend row.
  out += "  <text x=\"" + number(legend_left) + "\" y=\"" + number(plot_top + 4) + "\" font-weight=\"bold\">jobs</text>\n";
  for (std::size_t i = 0; i < results.size(); i++) {
    const JobResult& r = results[i];
    const char* colour = palette[i % palette_count];
    const uint64_t count = r.latency.count();
    if (count > 0) {
      // The curve ends where the samples stop resolving: at N samples, 1 - p/100 = 1/N is
      // the maximum's rank.
      const double nines_end = std::min(std::log10(static_cast<double>(count)), static_cast<double>(nines_max));
      std::string points;
      for (int k = 0; k <= plot_points_per_curve; k++) {
        const double nines = nines_end * k / plot_points_per_curve;
        const double p = k == plot_points_per_curve && nines_end >= std::log10(static_cast<double>(count))
                             ? 100.0
                             : 100.0 * (1.0 - std::pow(10.0, -nines));
        if (!points.empty()) points += ' ';
        points += number(x_of(nines)) + "," + number(y_of(latency_us(r.latency.percentile(p))));
      }
      out += "  <polyline fill=\"none\" stroke=\"" + std::string(colour) + "\" stroke-width=\"2\" points=\"" + points +
             "\"><title>" + xml_escape(r.name) + "</title></polyline>\n";
      if (nines_end == 0) {  // one sample: a dot, since a line of one point is invisible
        out += "  <circle cx=\"" + number(x_of(0)) + "\" cy=\"" + number(y_of(latency_us(r.latency.min()))) +
               "\" r=\"3\" fill=\"" + colour + "\"/>\n";
      }
    }
    const double row_y = plot_top + static_cast<double>(i + 1) * legend_row_height;
    out += "  <line x1=\"" + number(legend_left) + "\" y1=\"" + number(row_y - 4) + "\" x2=\"" + number(legend_left + 20) +
           "\" y2=\"" + number(row_y - 4) + "\" stroke=\"" + colour + "\" stroke-width=\"" + (count > 0 ? "3" : "1") +
           "\"" + (count > 0 ? "" : " stroke-dasharray=\"2,2\"") + "/>\n";
    const std::string details =
        count > 0 ? " (" + std::string(rw_text(r.rw)) + ", " + std::to_string(count) + " samples)"
                  : " (" + std::string(rw_text(r.rw)) + ", no latency samples)";
    out += "  <text x=\"" + number(legend_left + 26) + "\" y=\"" + number(row_y) + "\">" + xml_escape(r.name) +
           "<tspan fill=\"#666666\">" + details + "</tspan></text>\n";
  }
  out += "</svg>\n";
  return out;
}

std::unique_ptr<PlotFile> PlotFile::open(const std::string& path, std::string& error) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    error = "cannot write '" + path + "': " + std::strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<PlotFile>(new PlotFile(file, path));
}

PlotFile::~PlotFile() {
  if (file_ == nullptr) return;
  std::fclose(file_);
  std::remove(path_.c_str());  // never written: leave no empty plot behind
}

std::string PlotFile::write(std::string_view text) {
  RM_ASSERT(file_ != nullptr);  // write() is called once
  std::FILE* file = file_;
  file_ = nullptr;
  const bool written = std::fwrite(text.data(), 1, text.size(), file) == text.size();
  const int write_errno = errno;
  const bool closed = std::fclose(file) == 0;
  if (!written) return "cannot write '" + path_ + "': " + std::strerror(write_errno);
  if (!closed) return "cannot write '" + path_ + "': " + std::strerror(errno);
  return "";
}

}  // namespace ringmux::loadgen
