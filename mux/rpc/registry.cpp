#include "ringmux/mux/rpc/registry.h"

#include <endian.h>

#include <cstring>
#include <string>
#include <utility>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

void Registry::add_stream(uint32_t handler_id, StreamHandler handler) {
  RM_ASSERT(handler);
  const bool inserted = handlers_.emplace(handler_id, std::move(handler)).second;
  RM_ASSERT(inserted);  // one handler per id
}

void Registry::add_unary_route(uint32_t handler_id, uint64_t route_key, UnaryHandler handler) {
  RM_ASSERT(handler);
  auto& table = routes_[handler_id];
  if (!table) {
    // The first route of this id: the id's handler dispatches by route key.
    table = std::make_shared<std::unordered_map<uint64_t, UnaryHandler>>();
    add_unary(handler_id, [handler_id, routes = table](std::span<const std::byte> request,
                                                       std::shared_ptr<Responder> responder) {
      uint64_t key = 0;
      if (request.size() < sizeof(key)) {
        return responder->fail(wire::StatusCode::unknown_handler, "routed handler " + std::to_string(handler_id) +
                                                                      ": the request has no route key");
      }
      std::memcpy(&key, request.data(), sizeof(key));
      key = le64toh(key);
      auto route = routes->find(key);
      if (route == routes->end()) {
        return responder->fail(wire::StatusCode::unknown_handler, "handler " + std::to_string(handler_id) +
                                                                      " has no route " + std::to_string(key));
      }
      route->second(request.subspan(sizeof(key)), std::move(responder));
    });
  }
  const bool inserted = table->emplace(route_key, std::move(handler)).second;
  RM_ASSERT(inserted);  // one handler per route
}

std::vector<std::byte> routed_request(uint64_t route_key, std::span<const std::byte> request) {
  std::vector<std::byte> bytes(sizeof(route_key) + request.size());
  const uint64_t key = htole64(route_key);
  std::memcpy(bytes.data(), &key, sizeof(key));
  if (!request.empty()) std::memcpy(bytes.data() + sizeof(key), request.data(), request.size());
  return bytes;
}

const Registry::StreamHandler* Registry::find(uint32_t handler_id) const noexcept {
  auto it = handlers_.find(handler_id);
  return it == handlers_.end() ? nullptr : &it->second;
}

StreamObserver* Registry::open_stream(const StreamStart& start) const noexcept {
  const StreamHandler* handler = find(start.handler_id);
  return handler == nullptr ? nullptr : (*handler)(start);
}

}  // namespace ringmux::mux
