#include "tools/chaos/proxy.h"

#include <cstdio>

// The two renderings of ProxyStats declared in proxy.h: any thread.
namespace ringmux::chaos {

std::string stats_json(const ProxyStats& stats) {
  auto direction = [](const DirectionStats& d) {
    return "{\"bytes_received\": " + std::to_string(d.bytes_received) +
           ", \"bytes_forwarded\": " + std::to_string(d.bytes_forwarded) +
           ", \"bytes_discarded\": " + std::to_string(d.bytes_discarded) +
           ", \"bytes_delayed\": " + std::to_string(d.bytes_delayed) + ", \"sends\": " + std::to_string(d.sends) +
           ", \"bits_flipped\": " + std::to_string(d.bits_flipped) + "}";
  };
  return "{\"connections_accepted\": " + std::to_string(stats.connections_accepted) +
         ", \"connections_active\": " + std::to_string(stats.connections_active) +
         ", \"connect_failures\": " + std::to_string(stats.connect_failures) +
         ", \"resets\": " + std::to_string(stats.resets) + ", \"cuts\": " + std::to_string(stats.cuts) +
         ", \"aborts\": " + std::to_string(stats.aborts) + ", \"closes\": " + std::to_string(stats.closes) +
         ",\n \"up\": " + direction(stats.up) + ",\n \"down\": " + direction(stats.down) + "}\n";
}

std::string stats_text(const ProxyStats& stats) {
  char text[1024];
  std::snprintf(text, sizeof(text),
                "connections: %llu accepted, %llu active, %llu connect failures\n"
                "pairs ended: %llu resets, %llu cuts, %llu aborts, %llu closes\n"
                "%-5s %14s %14s %14s %14s %10s %8s\n"
                "%-5s %14llu %14llu %14llu %14llu %10llu %8llu\n"
                "%-5s %14llu %14llu %14llu %14llu %10llu %8llu\n",
                static_cast<unsigned long long>(stats.connections_accepted),
                static_cast<unsigned long long>(stats.connections_active),
                static_cast<unsigned long long>(stats.connect_failures), static_cast<unsigned long long>(stats.resets),
                static_cast<unsigned long long>(stats.cuts), static_cast<unsigned long long>(stats.aborts),
                static_cast<unsigned long long>(stats.closes), "", "received", "forwarded", "discarded", "delayed",
                "sends", "flips", "up", static_cast<unsigned long long>(stats.up.bytes_received),
                static_cast<unsigned long long>(stats.up.bytes_forwarded),
                static_cast<unsigned long long>(stats.up.bytes_discarded),
                static_cast<unsigned long long>(stats.up.bytes_delayed), static_cast<unsigned long long>(stats.up.sends),
                static_cast<unsigned long long>(stats.up.bits_flipped), "down",
                static_cast<unsigned long long>(stats.down.bytes_received),
                static_cast<unsigned long long>(stats.down.bytes_forwarded),
                static_cast<unsigned long long>(stats.down.bytes_discarded),
                static_cast<unsigned long long>(stats.down.bytes_delayed),
                static_cast<unsigned long long>(stats.down.sends),
                static_cast<unsigned long long>(stats.down.bits_flipped));
  return text;
}

}  // namespace ringmux::chaos
