// The load generator's end-to-end verifier (tools/loadgen/verify.h): it must catch every
// kind of damage a transport can do to a stream: a flipped bit, a lost message, a
// repeated message, bytes of another stream, whatever the split of the deliveries.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "tools/loadgen/verify.h"

using namespace ringmux::loadgen;

namespace {

// `count` stamped messages of the given sizes, back to back, as a stream carries them.
std::vector<std::byte> stream_of(uint64_t key, const std::vector<uint32_t>& sizes, std::vector<std::size_t>* starts = nullptr) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < sizes.size(); i++) {
    if (starts != nullptr) starts->push_back(out.size());
    const std::size_t at = out.size();
    out.resize(at + sizes[i]);
    stamp_message(std::span(out).subspan(at, sizes[i]), key, i);
  }
  return out;
}

// Feeds `bytes` in random pieces of 1..max_piece bytes.
VerifyCounts feed_split(uint64_t key, std::span<const std::byte> bytes, std::mt19937_64& random, std::size_t max_piece) {
  StreamVerifier verifier(key, 1 << 20);
  while (!bytes.empty()) {
    const std::size_t piece = std::min<std::size_t>(bytes.size(), 1 + random() % max_piece);
    verifier.feed(bytes.first(piece));
    bytes = bytes.subspan(piece);
  }
  verifier.finish();
  return verifier.counts();
}

uint64_t seed_from_env() {
  const char* text = std::getenv("RINGMUX_SEED");
  const uint64_t seed = text != nullptr ? std::strtoull(text, nullptr, 10) : std::random_device{}();
  std::printf("verify tests: seed %llu (RINGMUX_SEED to repeat)\n", static_cast<unsigned long long>(seed));
  return seed;
}

}  // namespace

// Proves an intact stream verifies whole, however it is split.
TEST_CASE("loadgen verify: an intact stream passes in any split") {
  std::mt19937_64 random(seed_from_env());
  const std::vector<uint32_t> sizes = {32, 33, 4096, 100, 65536, 40, 1000, 32};
  const auto stream = stream_of(7, sizes);
  for (std::size_t max_piece : {1, 7, 31, 32, 33, 4096, 1 << 20}) {
    const VerifyCounts counts = feed_split(7, stream, random, max_piece);
    CHECK(counts.messages == sizes.size());
    CHECK(counts.errors() == 0);
  }
}

// Proves one flipped bit anywhere in a message (stamp or body) is a mismatch.
TEST_CASE("loadgen verify: a flipped bit is a mismatch") {
  std::mt19937_64 random(seed_from_env());
  std::vector<std::size_t> starts;
  const std::vector<uint32_t> sizes = {64, 64, 64, 64};
  const auto clean = stream_of(9, sizes, &starts);
  // Past the magic and length (offset 8 on), so that framing survives: the message's
  // sequence, key, digest or body is what breaks.
  for (int trial = 0; trial < 200; trial++) {
    auto damaged = clean;
    const std::size_t message = random() % sizes.size();
    const std::size_t offset = 8 + random() % (sizes[message] - 8);
    damaged[starts[message] + offset] ^= std::byte{static_cast<unsigned char>(1u << (random() % 8))};
    const VerifyCounts counts = feed_split(9, damaged, random, 50);
    CHECK(counts.mismatches >= 1);
  }
}

// Proves a damaged length or magic loses sync and says so, never reads past its bound.
TEST_CASE("loadgen verify: a damaged stamp header loses sync") {
  auto stream = stream_of(3, {64, 64});
  stream[5] = std::byte{0x7f};  // length byte 1: far past the bound
  StreamVerifier verifier(3, 4096);
  verifier.feed(stream);
  CHECK(verifier.lost_sync());
  CHECK(verifier.counts().mismatches == 1);
}

// Proves a lost message counts as a gap and a repeated one as a duplicate.
TEST_CASE("loadgen verify: gaps and duplicates are counted by sequence") {
  std::vector<std::size_t> starts;
  const auto stream = stream_of(5, {40, 40, 40, 40}, &starts);
  // Drop message 1: the stream reads 0, 2, 3.
  std::vector<std::byte> lost(stream.begin(), stream.begin() + 40);
  lost.insert(lost.end(), stream.begin() + 80, stream.end());
  StreamVerifier gap(5, 4096);
  gap.feed(lost);
  CHECK(gap.counts().gaps == 1);
  CHECK(gap.counts().duplicates == 0);
  CHECK(gap.counts().mismatches == 0);
  // Repeat message 1: 0, 1, 1, 2, 3.
  std::vector<std::byte> twice(stream.begin(), stream.begin() + 80);
  twice.insert(twice.end(), stream.begin() + 40, stream.end());
  StreamVerifier dup(5, 4096);
  dup.feed(twice);
  CHECK(dup.counts().duplicates == 1);
  CHECK(dup.counts().gaps == 0);
  CHECK(dup.counts().messages == 5);
}

// Proves bytes of another stream (another key) are mismatches, and a partial message
// at the end of a stream that should have ended whole is a gap.
TEST_CASE("loadgen verify: another stream's bytes and a torn tail") {
  const auto other = stream_of(11, {48});
  StreamVerifier verifier(12, 4096);
  verifier.feed(other);
  CHECK(verifier.counts().mismatches == 1);
  const auto mine = stream_of(12, {48, 48});
  StreamVerifier torn(12, 4096);
  torn.feed(std::span(mine).first(70));
  torn.finish();
  CHECK(torn.counts().messages == 1);
  CHECK(torn.counts().gaps == 1);
}

// Proves a single unary message is checked against the sequence its call expects.
TEST_CASE("loadgen verify: unary responses must carry their call's sequence") {
  std::vector<std::byte> message(100);
  stamp_message(message, 21, 4);
  VerifyCounts counts;
  CHECK(verify_message(message, 21, 4, counts));
  CHECK_FALSE(verify_message(message, 21, 5, counts));  // another call's response
  CHECK(counts.duplicates == 1);
  CHECK(message_intact(message));
  message[60] ^= std::byte{1};
  CHECK_FALSE(message_intact(message));
}
