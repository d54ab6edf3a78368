// The session's stream table (mux/session/stream_table.h): a reference model under random
// operations, stable addresses, ids chosen to collide, memory given back.
#include "ringmux/mux/session/stream_table.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;

namespace {

// A value that knows its id, counts live instances and fills some bytes.
struct Value {
  static inline int live = 0;
  uint32_t id;
  uint64_t payload[3];
  explicit Value(uint32_t stream_id) : id(stream_id), payload{stream_id, ~uint64_t{stream_id}, 7} { live++; }
  ~Value() { live--; }
  Value(const Value&) = delete;
};

}  // namespace

// Proves the table agrees with a map after every one of 200,000 random inserts, erases and
// lookups over a small id space (long probe runs, reused slots, index growth), and that
// every value is destroyed exactly once.
TEST_CASE("stream table: matches a reference map under random operations") {
  const uint64_t seed = test::test_seed("stream table model");
  std::mt19937_64 random(seed);
  {
    StreamTable<Value> table(random());
    std::unordered_map<uint32_t, const Value*> model;
    for (int step = 0; step < 200'000; step++) {
      const uint32_t id = static_cast<uint32_t>(random() % 2048);
      const int op = static_cast<int>(random() % 3);
      Value* found = table.find(id);
      auto it = model.find(id);
      REQUIRE_MESSAGE((found != nullptr) == (it != model.end()), "seed " << seed << " step " << step);
      if (found != nullptr) {
        REQUIRE(found == it->second);  // never moved
        REQUIRE(found->id == id);
        REQUIRE(found->payload[1] == ~uint64_t{id});
      }
      if (op == 0 && found == nullptr) {
        model[id] = &table.emplace(id, id);
      } else if (op == 1 && found != nullptr) {
        table.erase(id);
        model.erase(id);
      }
      REQUIRE(table.size() == model.size());
      REQUIRE(Value::live == static_cast<int>(model.size()));
    }
    std::size_t visited = 0;
    table.for_each([&](uint32_t id, Value& value) {
      CHECK(value.id == id);
      CHECK(model.count(id) == 1);
      visited++;
    });
    CHECK(visited == model.size());
  }
  CHECK(Value::live == 0);
}

// Proves ids picked to share low bits (what a peer choosing its ids could send: every id a
// multiple of 65,536) are found in a short probe: 16,384 of them insert, find and erase.
TEST_CASE("stream table: ids sharing their low bits") {
  StreamTable<Value> table(0x5eed);
  for (uint32_t i = 1; i <= 16'384; i++) table.emplace(i << 16 | 1, i << 16 | 1);
  for (uint32_t i = 1; i <= 16'384; i++) {
    const Value* value = table.find(i << 16 | 1);
    REQUIRE(value != nullptr);
    CHECK(value->id == (i << 16 | 1));
    CHECK(table.find(i << 16 | 3) == nullptr);
  }
  for (uint32_t i = 1; i <= 16'384; i += 2) table.erase(i << 16 | 1);
  CHECK(table.size() == 8'192);
  for (uint32_t i = 2; i <= 16'384; i += 2) CHECK(table.find(i << 16 | 1) != nullptr);
}

// Proves an emptied table gives its memory back on trim(), and that erase of an absent id
// and find in an empty table are harmless.
TEST_CASE("stream table: trim gives memory back") {
  StreamTable<Value> table(1);
  CHECK(table.find(5) == nullptr);
  table.erase(5);
  for (uint32_t id = 1; id <= 10'000; id++) table.emplace(id, id);
  const std::size_t full = table.bytes_held();
  CHECK(full >= 10'000 * sizeof(Value));
  table.trim();  // not empty: keeps everything
  CHECK(table.bytes_held() == full);
  for (uint32_t id = 1; id <= 10'000; id++) table.erase(id);
  CHECK(table.empty());
  table.trim();
  CHECK(table.bytes_held() == 0);
  CHECK(Value::live == 0);
  table.emplace(3, 3);  // usable again
  CHECK(table.find(3)->id == 3);
}
