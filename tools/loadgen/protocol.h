// What ringmux-loadgen and ringmux-serve say to each other, for both engines.
//
// ringmux engine: handler ids below. A unary request starts with a preamble: u32 size of
// the response the server must send, u32 flags. Every stream's OPEN carries the same
// preamble (u32 message size, u32 flags) and, with flag_verify, the u64 stream key; the
// size is that of a source's messages, and the largest message a client will send a sink.
// A sink stream answers its byte count (u64) when the client ends it, followed with
// flag_verify by what its verifier counted (u64 messages, mismatches, gaps, duplicates);
// a source stream writes messages of the given size until the client resets the stream.
// A server bounds the messages it builds or reassembles (ringmux-serve --max_message): a
// unary response, a source's messages or a verified sink's messages above its bound are
// refused with a stream-scoped error, status resource_exhausted, naming the option.
// tcp engine (the raw baseline, no framing): the client's first 24 bytes are a hello —
// u32 mode (1 echo: every byte comes back; 2 sink: bytes are counted and the count is
// sent back, as above, when the client shuts down its side; 3 source: the server writes
// messages of the given size until the client closes; 4 call: unary calls whose response
// size is not the request's, see below), u32 flags, u64 stream key, u32 message size (as in
// an OPEN), u32 reserved — then raw bytes. A message size above the server's bound closes
// the connection (the baseline has no error frames).
// tcp call mode: each request starts with a header, u32 request bytes (header included),
// u32 response bytes; the server reads the request and writes that many response bytes.
// Verified, the request after the header is a stamped message, which the server checks
// (a damaged one closes the connection), and the response is stamped with the request's
// stream key and sequence. A response must be at least one byte: on a raw stream an empty
// one could not be told from none.
//
// flag_verify (tools/loadgen/verify.h): the client's messages are stamped; a sink checks
// them, a source stamps its own, an echo returns them as they came; a unary server checks
// the request (after the preamble) and answers a response stamped with the request's
// stream key and sequence, or fails the call with a message starting "verify:".
#pragma once

#include <cstdint>

namespace ringmux::loadgen {

inline constexpr uint32_t handler_unary = 1;
inline constexpr uint32_t handler_sink = 2;
inline constexpr uint32_t handler_source = 3;
inline constexpr uint32_t handler_echo_stream = 4;

inline constexpr uint32_t tcp_mode_echo = 1;
inline constexpr uint32_t tcp_mode_sink = 2;
inline constexpr uint32_t tcp_mode_source = 3;
inline constexpr uint32_t tcp_mode_call = 4;
inline constexpr uint32_t tcp_call_header_bytes = 8;
inline constexpr uint32_t tcp_hello_bytes = 24;

inline constexpr uint32_t flag_verify = 1;

// Unary request / stream OPEN preamble: u32 size, u32 flags (+ u64 stream key on a
// verified stream's OPEN).
inline constexpr uint32_t preamble_bytes = 8;
// A unary request's smallest size, the same on both engines (the ringmux preamble, or the
// tcp call header).
static_assert(tcp_call_header_bytes == preamble_bytes, "one smallest unary request for both engines");
inline constexpr uint32_t open_verify_bytes = preamble_bytes + 8;

// What a sink answers: its byte count, then with flag_verify four verify counters.
inline constexpr uint32_t sink_answer_bytes = 8;
inline constexpr uint32_t sink_answer_verify_bytes = 8 + 4 * 8;

// Default port of ringmux-serve and of --port.
inline constexpr uint16_t default_port = 7300;

// Largest bs / resp_bs: a message the server builds or counts whole. 64 MiB is far past
// any storage block and keeps the server's response buffer bounded.
inline constexpr uint32_t message_bytes_max = 64u << 20;

// A job stops after this many failed operations: past it the figures say nothing and a
// broken server would only be hammered.
inline constexpr uint64_t job_errors_max = 1000;

}  // namespace ringmux::loadgen
