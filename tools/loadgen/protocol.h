// What ringmux-loadgen and ringmux-serve say to each other, for both engines.
//
// ringmux engine: handler ids below; a unary request starts with the u32 size of the
// response the server must send; a sink stream answers its byte count (u64) when the
// client ends it; a source stream's OPEN carries the u32 message size, and the server
// writes messages until the client resets the stream.
// tcp engine (the raw baseline, no framing): the client's first 8 bytes are a hello —
// u32 mode (1 echo: every byte comes back; 2 sink: bytes are counted and the u64 count
// is sent back when the client shuts down its side) and u32 reserved — then raw bytes.
#pragma once

#include <cstdint>

namespace ringmux::loadgen {

inline constexpr uint32_t handler_unary = 1;
inline constexpr uint32_t handler_sink = 2;
inline constexpr uint32_t handler_source = 3;
inline constexpr uint32_t handler_echo_stream = 4;

inline constexpr uint32_t tcp_mode_echo = 1;
inline constexpr uint32_t tcp_mode_sink = 2;

// Default port of ringmux-serve and of --port.
inline constexpr uint16_t default_port = 7300;

// Largest bs / resp_bs: a message the server builds or counts whole. 64 MiB is far past
// any storage block and keeps the server's response buffer bounded.
inline constexpr uint32_t message_bytes_max = 64u << 20;

// A job stops after this many failed operations: past it the figures say nothing and a
// broken server would only be hammered.
inline constexpr uint64_t job_errors_max = 1000;

}  // namespace ringmux::loadgen
