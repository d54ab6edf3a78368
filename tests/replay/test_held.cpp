// HeldBatches: the sender's replay store (replay/held.h).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "ringmux/replay/held.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::replay;

namespace {

// A batch whose bytes are their own positions (mod 251), split at `control_bytes`.
void make_batch(uint64_t start, std::size_t control_bytes, std::size_t data_bytes, ByteVector& control,
                ByteVector& data) {
  control.resize(control_bytes);
  data.resize(data_bytes);
  for (std::size_t i = 0; i < control_bytes; i++) control[i] = std::byte((start + i) % 251);
  for (std::size_t i = 0; i < data_bytes; i++) data[i] = std::byte((start + control_bytes + i) % 251);
}

// Appends the spans to `out`; checks they carry positions [from, from + size).
void collect(const HeldSpans& spans, uint64_t from, std::vector<uint64_t>& out) {
  uint64_t position = from;
  for (auto part : {spans.first, spans.second}) {
    for (std::byte b : part) {
      REQUIRE(b == std::byte(position % 251));
      out.push_back(position++);
    }
  }
}

}  // namespace

TEST_CASE("held batches: push, send, ack release whole batches, recycle capacity") {
  HeldBatches held(1 << 20);
  ByteVector control, data;
  make_batch(0, 100, 1000, control, data);
  CHECK(held.push(control, data) == 0);
  CHECK(control.empty());
  CHECK(data.empty());
  make_batch(1100, 0, 500, control, data);
  CHECK(held.push(control, data) == 1100);
  CHECK(held.tail() == 1600);
  CHECK(held.bytes_unsent() == 1600);

  std::vector<uint64_t> sent;
  const HeldSpans first = held.take_unsent();
  CHECK(first.first.size() == 100);
  CHECK(first.second.size() == 1000);
  collect(first, 0, sent);
  const HeldSpans second = held.take_unsent();
  CHECK(second.first.size() == 500);
  CHECK(second.second.empty());
  collect(second, 1100, sent);
  CHECK(held.take_unsent().empty());
  CHECK(sent.size() == 1600);

  // A partial ack keeps the whole first batch; the next releases it.
  CHECK(held.ack(50).value() == 50);
  CHECK(held.batches() == 2);
  CHECK(held.bytes_held() == 1600);
  CHECK(held.ack(40).value() == 0);  // stale
  CHECK(held.ack(1100).value() == 1050);
  CHECK(held.batches() == 1);
  CHECK(held.bytes_held() == 500);
  CHECK(held.invariant());
  // The released batch's buffers come back when its slot of the ring is used again (within
  // the ring's 4 slots; batches too large to join the newest one).
  bool recycled = false;
  uint64_t position = 1600;
  for (int i = 0; i < 4 && !recycled; i++) {
    make_batch(position, 10, 3000, control, data);
    ByteVector c2 = std::move(control), d2 = std::move(data);
    control = {};
    data = {};
    CHECK(held.push(c2, d2) == position);
    position += 3010;
    recycled = c2.capacity() >= 100 && d2.capacity() >= 1000;  // the first batch's vectors
  }
  CHECK(recycled);
  CHECK(held.ack(position).value() == position - 1100);
  CHECK(held.batches() == 0);
  CHECK(held.bytes_held() == 0);
  CHECK(held.invariant());
}

TEST_CASE("held batches: ack beyond the tail is refused and changes nothing") {
  HeldBatches held;
  ByteVector control, data;
  make_batch(0, 0, 64, control, data);
  held.push(control, data);
  auto ack = held.ack(65);
  REQUIRE(!ack);
  CHECK(ack.error() == ReplayError::ack_ahead);
  CHECK(held.acked() == 0);
  CHECK(held.ack(64).value() == 64);
}

TEST_CASE("held batches: rewind replays from any held position, refuses released and unwritten ones") {
  HeldBatches held;
  ByteVector control, data;
  make_batch(0, 30, 70, control, data);
  held.push(control, data);
  make_batch(100, 20, 80, control, data);
  held.push(control, data);
  while (!held.take_unsent().empty()) {
  }
  REQUIRE(held.ack(10).ok());
  CHECK(held.rewind(5).error() == ReplayError::position_gone);
  CHECK(held.rewind(201).error() == ReplayError::position_ahead);
  for (uint64_t from : {10u, 29u, 30u, 31u, 99u, 100u, 119u, 120u, 150u, 200u}) {
    REQUIRE(held.rewind(from).ok());
    std::vector<uint64_t> sent;
    for (HeldSpans spans = held.take_unsent(); !spans.empty(); spans = held.take_unsent()) {
      collect(spans, from + sent.size(), sent);
    }
    CHECK(sent.size() == 200 - from);
    CHECK(held.cursor() == 200);
  }
}

TEST_CASE("held batches: the bound back-pressures, a random exchange loses and repeats nothing") {
  const uint64_t seed = test::test_seed("held batches random exchange");
  std::mt19937_64 random(seed);
  HeldBatches held(64 * 1024);
  ByteVector control, data;
  uint64_t received = 0;  // the peer's receive position
  uint64_t refused = 0;
  for (int step = 0; step < 20000; step++) {
    const std::size_t c = random() % 300, d = random() % 8000 + 1;
    if (held.fits(c + d)) {
      make_batch(held.tail(), c, d, control, data);
      held.push(control, data);
    } else {
      refused++;
    }
    CHECK(held.bytes_held() <= 64 * 1024);
    // Some of the unsent bytes reach the peer...
    if (random() % 3 != 0) {
      const HeldSpans spans = held.take_unsent();
      const uint64_t from = held.cursor() - spans.size();
      if (from == received) {
        std::vector<uint64_t> got;
        collect(spans, from, got);
        received += got.size();
      }
    }
    // ... acks arrive late, and now and then the connection breaks: resume from the peer's
    // receive position (whatever was in flight past it is sent again).
    if (random() % 4 == 0) REQUIRE(held.ack(received - (random() % 2 == 0 ? 0 : std::min<uint64_t>(received, 17))).ok());
    if (random() % 50 == 0) {
      REQUIRE(held.ack(received).ok());
      REQUIRE(held.rewind(received).ok());
    }
    if (held.cursor() != received && random() % 7 == 0) {
      REQUIRE(held.rewind(received).ok());  // lost in flight
    }
    REQUIRE(held.invariant());
  }
  CHECK(refused > 0);  // the bound was reached
  CHECK(held.bytes_held_peak() <= 64 * 1024);
}

// Proves small batches join the newest batch while its buffer has room (one batch, not
// one per push), that the joined bytes are sent and replayed in position order, and that
// the spans of a send in flight stay valid while later ones join.
TEST_CASE("held batches: small batches join the newest one") {
  HeldBatches held(1 << 20);
  ByteVector control, data;
  make_batch(0, 0, 64, control, data);
  data.reserve(4096);
  CHECK(held.push(control, data) == 0);
  const HeldSpans in_flight = held.take_unsent();  // a send of the first 64 bytes
  const std::byte* first_byte = in_flight.first.data();
  uint64_t position = 64;
  for (int i = 0; i < 20; i++) {
    make_batch(position, 8, 56, control, data);
    CHECK(held.push(control, data) == position);
    CHECK(control.empty());
    CHECK(data.empty());
    position += 64;
  }
  CHECK(held.batches() == 1);
  CHECK(held.tail() == position);
  CHECK(in_flight.first.data() == first_byte);  // not moved by the joins
  std::vector<uint64_t> sent;
  collect(in_flight, 0, sent);
  const HeldSpans rest = held.take_unsent();
  CHECK(rest.size() == position - 64);
  collect(rest, 64, sent);
  CHECK(sent.size() == position);
  // A resume replays from the middle of the joined batch.
  REQUIRE(held.rewind(100).ok());
  const HeldSpans replay = held.take_unsent();
  CHECK(replay.size() == position - 100);
  sent.clear();
  collect(replay, 100, sent);
  CHECK(held.invariant());
}

// Proves release_spares() (an idle session's trim) while batches are still held leaves the
// held batches intact and a later ack and push work (the spare list is rebuilt).
TEST_CASE("held batches: spares released while batches are held") {
  HeldBatches held(1 << 20);
  ByteVector control, data;
  uint64_t position = 0;
  for (int i = 0; i < 6; i++) {
    make_batch(position, 0, 3000, control, data);
    CHECK(held.push(control, data) == position);
    position += 3000;
    (void)held.take_unsent();
  }
  CHECK(held.ack(3000).value() == 3000);  // one spare
  held.release_spares();
  CHECK(held.batches() == 5);
  CHECK(held.ack(position).value() == position - 3000);  // five released into a list given back
  CHECK(held.batches() == 0);
  make_batch(position, 0, 3000, control, data);
  CHECK(held.push(control, data) == position);
  CHECK(held.invariant());
}

// Proves decay_spares() frees exactly the spares that stayed unused since its last call:
// of six spares, two taken and returned between two calls, four are freed; a list emptied
// in between loses none; one untouched for a whole period loses all.
TEST_CASE("held batches: spares unused for a period are freed") {
  HeldBatches held(1 << 20);
  ByteVector control, data;
  uint64_t position = 0;
  auto push = [&] {
    make_batch(position, 0, 3000, control, data);  // too large to join the newest batch
    REQUIRE(held.push(control, data) == position);
    position += 3000;
    (void)held.take_unsent();
  };
  for (int i = 0; i < 6; i++) push();
  REQUIRE(held.ack(position).ok());  // six spares
  held.decay_spares();               // the first call only marks the period's start
  push();
  push();  // two spares taken
  REQUIRE(held.ack(position).ok());  // and given back: six again, the bottom four unused
  held.decay_spares();
  // Two remain: the next two pushes get recycled buffers, the third a fresh (empty) one.
  for (int i = 0; i < 3; i++) {
    make_batch(position, 0, 3000, control, data);
    ByteVector c = std::move(control), d = std::move(data);
    control = {};
    data = {};
    REQUIRE(held.push(c, d) == position);
    position += 3000;
    (void)held.take_unsent();
    CHECK((d.capacity() >= 3000) == (i < 2));
  }
  REQUIRE(held.ack(position).ok());
  held.decay_spares();  // three spares, but the list was empty meanwhile: none is freed
  held.decay_spares();  // none taken since: all three are
  make_batch(position, 0, 3000, control, data);
  ByteVector c = std::move(control), d = std::move(data);
  REQUIRE(held.push(c, d) == position);
  CHECK(d.capacity() == 0);  // no spare left
  CHECK(held.invariant());
}
