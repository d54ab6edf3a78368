// The message buffer a load server's loop shares among its streams and calls
// (tools/loadgen/message_buffer.h): a verified message written in pieces, with other
// streams' messages built in the same buffer between the pieces, still arrives whole and
// intact; a stream alone stamps each message once.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "tools/loadgen/message_buffer.h"
#include "tools/loadgen/verify.h"

using namespace ringmux::loadgen;

TEST_CASE("message buffer: a lone stream's message is stamped once however many writes take it") {
  MessageBuffer buffer(1 << 20);
  std::vector<std::byte> sent;
  for (int piece = 0; piece < 4; piece++) {
    const auto message = buffer.stamped(4096, 7, 0);
    sent.insert(sent.end(), message.begin() + piece * 1024, message.begin() + (piece + 1) * 1024);
  }
  CHECK(buffer.stamps() == 1);
  VerifyCounts counts;
  CHECK(verify_message(sent, 7, 0, counts));
  CHECK(counts.errors() == 0);
}

TEST_CASE("message buffer: pieces of a message split by another stream's messages stay one intact message") {
  MessageBuffer buffer(1 << 20);
  constexpr uint32_t size = 1 << 20;
  std::vector<std::byte> a, b;
  // Stream A writes the first 100,003 bytes of its message 3; stream B a whole message (the
  // buffer now holds B's); an unverified call; then A goes on in pieces of odd sizes, each
  // taken from what the buffer gives back at its offset.
  auto rest = buffer.stamped_from(size, 1, 3, 0);
  a.insert(a.end(), rest.begin(), rest.begin() + 100'003);
  rest = buffer.stamped(size / 2, 2, 0);
  b.insert(b.end(), rest.begin(), rest.end());
  (void)buffer.plain(size);
  while (a.size() < size) {
    rest = buffer.stamped_from(size, 1, 3, a.size());
    REQUIRE(!rest.empty());
    const std::size_t take = std::min<std::size_t>(rest.size(), 77'777);
    a.insert(a.end(), rest.begin(), rest.begin() + take);
    if (a.size() % 3 == 0) (void)buffer.stamped(4096, 2, 1);  // B displaces A now and then
  }
  // After B displaced it, A's bytes were rebuilt piece by piece, not stamped whole again.
  CHECK(buffer.pieces() >= 2);
  VerifyCounts counts;
  CHECK(verify_message(a, 1, 3, counts));
  CHECK(verify_message(b, 2, 0, counts));
  CHECK(counts.errors() == 0);
}

TEST_CASE("message buffer: a piece of a body is the same bytes as in the whole message") {
  std::vector<std::byte> whole(10'000);
  stamp_message(whole, 9, 4);
  for (std::size_t from : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{4093}}) {
    std::vector<std::byte> piece(1234);
    fill_message_body(piece, 9, 4, from);
    CHECK(std::equal(piece.begin(), piece.end(), whole.begin() + verify_stamp_bytes + from));
  }
}

TEST_CASE("message buffer: growing keeps the message it holds, and never past its bound") {
  MessageBuffer buffer(256 * 1024);
  auto message = buffer.stamped(1024, 5, 9);
  const std::vector<std::byte> before(message.begin(), message.end());
  CHECK(buffer.plain(256 * 1024).size() == 256 * 1024);  // the largest ask: the buffer grows
  message = buffer.stamped(1024, 5, 9);
  CHECK(buffer.stamps() == 1);
  CHECK(std::equal(message.begin(), message.end(), before.begin(), before.end()));
  CHECK(buffer.bytes_max() == 256 * 1024);
}
