// Writes the seed corpus of fuzz_decoder: one small file per frame kind and a few
// multi-frame and malformed streams. Run once; the output is committed.
//   c++ -std=c++20 -I. tests/fuzz/make_seeds.cpp wire/*.cpp base/assert.cpp base/errors.cpp -lxxhash \
//     -o /tmp/make_seeds && /tmp/make_seeds tests/fuzz/corpus/decoder
#include <cstdio>
#include <string>
#include <vector>

#include "ringmux/wire/codec.h"

using namespace ringmux::wire;

namespace {

void write(const std::string& dir, const std::string& name, uint8_t split, const std::vector<std::byte>& bytes) {
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    return;
  }
  std::fputc(split, f);
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

template <typename Encode>
std::vector<std::byte> frame(Encode encode) {
  std::vector<std::byte> buffer(2048);
  buffer.resize(encode(std::span<std::byte>(buffer)));
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::vector<std::byte> payload(40, std::byte{0x61});
  Hello hello;
  hello.hello_flags = hello_flag_resume;
  HelloAck ack;
  ack.version = 1;
  std::vector<std::vector<std::byte>> frames = {
      frame([&](auto out) { return encode_hello(out, hello); }),
      frame([&](auto out) { return encode_hello_ack(out, ack); }),
      frame([&](auto out) { return encode_open(out, 1, flag_end_stream, 5, 1000000, payload); }),
      frame([&](auto out) { return encode_frame(out, FrameKind::data, 0, 3, payload); }),
      frame([&](auto out) { return encode_end(out, 3); }),
      frame([&](auto out) { return encode_reset(out, 3, StatusCode::cancelled); }),
      frame([&](auto out) { return encode_stop(out, 3, StatusCode::stream_stopped); }),
      frame([&](auto out) { return encode_credit(out, 0, 65536); }),
      frame([&](auto out) { return encode_ping(out, 42); }),
      frame([&](auto out) { return encode_pong(out, 42); }),
      frame([&](auto out) { return encode_ack(out, 123456); }),
      frame([&](auto out) { return encode_goaway(out, 9, StatusCode::going_away, "drain"); }),
      frame([&](auto out) { return encode_error(out, 0, StatusCode::protocol_error, "bad"); }),
  };
  std::vector<std::byte> all;
  for (std::size_t i = 0; i < frames.size(); i++) {
    write(dir, "kind_" + std::to_string(i + 1), 63, frames[i]);
    all.insert(all.end(), frames[i].begin(), frames[i].end());
  }
  write(dir, "stream_whole", 63, all);
  write(dir, "stream_split_1", 0, all);
  write(dir, "stream_split_7", 6, all);
  std::vector<std::byte> corrupt = frames[3];
  corrupt[30] ^= std::byte{1};
  write(dir, "bad_payload_checksum", 63, corrupt);
  std::vector<std::byte> ignorable = frames[3];
  ignorable[4] = std::byte{0x91};
  write(dir, "unknown_kind_bad_checksum", 63, ignorable);
  return 0;
}
