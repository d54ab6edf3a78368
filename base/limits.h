// Every limit of ringmux, in one place, each with the reason for its value.
//
// Units go last in the name. Relations between limits are checked at compile time at the
// bottom of this file. Pure constants: usable from any thread and from every layer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringmux::limits {

// ---- base: the log hook (base/log.h) -------------------------------------------------

// Longest message handed to the log sink, formatted on the logging thread's stack. 512
// bytes hold a reason, an address and a peer's error text (frame_text_bytes_max is cut).
inline constexpr uint32_t log_message_bytes_max = 512;

// ---- engine: the io_uring loop -------------------------------------------------------

// Submission queue entries per loop. A loop iteration rarely prepares more than a few
// dozen SQEs; 1024 lets a burst of 1000 connections be armed without an extra submit.
inline constexpr uint32_t loop_sq_entries = 1024;

// Completion queue entries per loop (IORING_SETUP_CQSIZE). Multishot operations post
// many CQEs per SQE, so the CQ is sized well above the SQ to keep overflow rare; overflow
// is still detected and drained (the kernel holds the excess with IORING_FEAT_NODROP).
inline constexpr uint32_t loop_cq_entries = 16384;

// Completions handled per loop iteration before timers and posted work get a turn: the
// event loop's budget, so one busy socket cannot starve the rest.
inline constexpr uint32_t loop_cqes_per_iteration_max = 4096;

// Expired timers run per iteration.
inline constexpr uint32_t loop_timers_per_iteration_max = 1024;

// Rounds of deferred work (engine::Loop::defer) run before the loop waits: work that
// defers more work (a completion whose callback makes a call that fails) runs again in
// the next round. Past the budget the rest runs in the next iteration, which then does
// not wait, so a callback that keeps deferring cannot hold the loop in one iteration.
inline constexpr uint32_t loop_deferred_rounds_max = 8;

// Busy-poll budget of a loop before it sleeps in io_uring_enter. Waking an idle core costs
// tens of microseconds on virtual machines (measured here: a 64 B echo round trip takes
// ~55 us when both sides sleep, ~10 us when they poll; perf/RESULTS.md). 20 us covers a
// loopback or LAN round trip plus the peer's handling, and bounds the price: at most
// 20 us of CPU per wake-up, nothing while the loop has work. LoopOptions::spin_ns = 0
// turns it off for loops that share their core.
inline constexpr uint64_t loop_spin_ns_default = 20'000;

// Size of one receive buffer in the loop's provided-buffer ring. 32 KiB holds a whole
// 64 KiB-message chunk pair in two CQEs and keeps a ring of 256 at 8 MiB per loop.
inline constexpr uint32_t recv_buffer_bytes = 32 * 1024;

// Buffers in the loop's provided-buffer ring: a power of two (kernel requirement), at most
// 32768 (kernel limit). 256 x 32 KiB = 8 MiB per loop, allocated once at loop start.
inline constexpr uint32_t recv_buffer_count = 256;

// listen(2) backlog: large enough that 1000 simultaneous connects are not dropped.
inline constexpr int listen_backlog = 4096;

// Default timeout of Socket::connect when the caller gives none.
inline constexpr uint32_t connect_timeout_ms_default = 5000;

// ---- wire: the frame format (normative values in wire/SPEC.md) -----------------------

// Fixed frame header size. See wire/SPEC.md section "Frame header".
inline constexpr uint32_t frame_header_bytes = 24;

// Largest payload of one frame. Bounds what the decoder buffers for a frame split across
// reads (it never allocates more, whatever length a peer claims) and, with chunking in
// mux/, how long a small frame can wait behind a large one. 1 MiB minus the header keeps a
// whole frame at or below 1 MiB.
inline constexpr uint32_t frame_payload_bytes_max = 1024 * 1024 - frame_header_bytes;

// Longest text of an ERROR message or a GOAWAY debug note. Text is for people reading
// logs; 1 KiB says what happened without letting a peer make us log megabytes.
inline constexpr uint32_t frame_text_bytes_max = 1024;

// Oldest and newest protocol version this build speaks (wire/SPEC.md, "Versions").
inline constexpr uint16_t protocol_version_min = 1;
inline constexpr uint16_t protocol_version_max = 1;

// ---- mux: flow control --------------------------------------------------------------

// Credit a new stream grants its peer before the first CREDIT frame. 256 KiB covers the
// bandwidth-delay product of a loopback or LAN path at several GB/s (10-50 us RTT) and
// four 64 KiB messages, so a single stream is not window-bound from its first bytes.
inline constexpr uint32_t stream_window_bytes_initial = 256 * 1024;

// Largest window a stream's receive side may grow to when its consumer keeps up. Bounds
// what one stream can make us buffer when its consumer then stops, and what it can queue
// in the kernel's socket buffers ahead of everything else. 2 MiB is 16x the bandwidth-delay
// product of a 10 Gbit/s LAN at 100 us and covers 100 Gbit/s; more only queues. Measured on
// loopback (W3, one stream of 64 KiB writes, 3 runs each, 2026-11-29): 2 MiB 3.9-4.0 GiB/s,
// 4 MiB 3.7-3.8, 8 MiB 3.6, 16 MiB 2.3-2.5: the bytes a bigger window lets queue fall out
// of the cache before the receiver copies them. (An earlier host measured 16 MiB ~20 %
// above 2 MiB; the cap is chosen by the bandwidth-delay product, not by either figure.)
inline constexpr uint32_t stream_window_bytes_max = 2 * 1024 * 1024;

// How far a stream's receive window may grow while other streams are open on the same
// connection. Everything a window lets the peer send may sit in the kernel's socket
// queues ahead of another stream's next frame, so a shared connection's window is that
// other stream's head-of-line delay: 2 MiB drains in ~400 us at 5 GiB/s (W5's probe p99
// goal is 500 us). Equal to stream_window_bytes_max by default; it matters when a caller
// raises the maximum (SessionOptions) for a long fat path.
inline constexpr uint32_t stream_window_bytes_shared_max = 2 * 1024 * 1024;

// How long a connection counts as shared after two streams were last open on it at once.
// A caller doing one call at a time has its stream open only for a round trip (tens of
// microseconds), so "open right now" would almost never cap the bulk stream beside it;
// 100 ms spans thousands of such calls, and a bulk stream truly left alone regains its
// full window a tenth of a second later.
inline constexpr uint64_t stream_window_shared_hold_ns = 100'000'000;

// Credit of the whole connection (stream id 0): what all streams together may have in
// flight unread. Four max stream windows, so a few bulk streams can all run at full
// window; beyond that more credit only queues bytes in the kernel, as a stream window does
// (W4, 64 streams of 16 KiB writes, 2 runs each, 2026-11-29: 4 MiB 3.4-3.6 GiB/s, 8 MiB
// 3.5, 64 MiB 2.2-2.6).
inline constexpr uint32_t connection_window_bytes_initial = 8 * 1024 * 1024;

// The smallest receive windows a side may announce in its HELLO / HELLO_ACK (SPEC §4.1),
// and what a dialer assumes of the acceptor's until the HELLO_ACK tells it: a dialer
// pipelines streams behind its HELLO, so an acceptor must grant at least these from the
// first byte. They bind only for one round trip (a dialer's first HELLO_ACK adds the
// difference to every stream): 16 KiB per stream and 64 KiB in all let a handful of small
// calls go with the HELLO while a memory-tight node may still announce small windows.
inline constexpr uint32_t stream_window_bytes_min = 16 * 1024;
inline constexpr uint32_t connection_window_bytes_min = 64 * 1024;

// Largest credit a sender may hold: a larger total is a flow-control violation (a peer
// that overflows its window counter is broken or hostile). 2^31 - 1, as in HTTP/2.
inline constexpr uint64_t window_bytes_limit = (uint64_t{1} << 31) - 1;

// ---- mux: sessions --------------------------------------------------------------------

// Streams the peer may have open at once on one connection; an OPEN beyond it is refused
// with RESET(refused_stream), which the caller may retry. The default, 16384, covers the
// "thousands of concurrent streams" of a storage node (10,000 calls in flight are tested)
// and bounds what any peer can make us hold in stream state to 16384 x ~200 bytes = 3.2 MiB
// per connection (a node with a thousand connections: 3.2 GiB at worst; 210.5 bytes per
// open idle stream measured at 100,000, tests/mux/session/test_scheduler.cpp). A connection
// that needs more raises SessionOptions::streams_concurrent_max up to the supported maximum:
// the cost per message does not grow with the streams open (the writable queue is served
// round robin in O(1) per turn), 100,000 streams on one connection are measured (W11 in
// perf/workloads.sh) at the same state per stream.
inline constexpr uint32_t streams_concurrent_max = 16384;
inline constexpr uint32_t streams_concurrent_max_supported = 1u << 20;

// Largest DATA frame the writer produces. A small frame of another stream waits behind at
// most one chunk: 64 KiB is ~20 us at loopback speed, and large enough that headers and
// checksums stay under 0.1 % of bulk traffic.
inline constexpr uint32_t data_chunk_bytes = 64 * 1024;

// Bytes one stream may add to a single send batch before the others get a turn (its
// turn), while few others wait: whole chunks.
inline constexpr uint32_t stream_batch_bytes_max = 2 * data_chunk_bytes;
// The turn while many wait: the batch is shared by the writers waiting, down to this. A
// round of every waiting stream must stay short for all of them to move: 10,000 streams
// with 128 KiB turns took 1.2 s a round at ~1 GiB/s, and over a 2 s run the slowest
// stream moved nothing; with 32 KiB turns a round is ~0.1 s at 3 GiB/s. 16 KiB turns cost
// W4 (64 streams of 16 KiB writes) 9 % of its throughput (more, smaller frames); 32 KiB
// kept it (3.37 against 3.33 GiB/s before, A/B). The writer's work per turn is O(1).
inline constexpr uint32_t stream_turn_bytes_min = 32 * 1024;

// An OPEN carrying at most this much payload goes ahead of data in its batch, with the
// control frames: a small unary request must not queue behind other streams' bulk data
// (W5's probe). Larger OPENs are data and take their turn.
inline constexpr uint32_t open_priority_bytes_max = 4096;

// Target size of one send batch: past it the writer stops taking data until the batch is
// sent (control frames still go in). 512 KiB: one io_uring send per 8 chunks, and a batch
// small enough to stay in the core's cache between the writer's copy into it and the
// kernel's copy out of it (W3 on loopback, perf/RESULTS.md: 4.4 GiB/s with 1 MiB
// batches, 5.35 GiB/s with 512 KiB, 2.5 GiB/s with 128 KiB, where sends per byte cost).
inline constexpr uint32_t send_batch_bytes_target = 512 * 1024;

// Control frames (PONG, CREDIT, RESET, STOP) a session may have queued UNSENT: the count
// falls back as they go out, so a session that answers PINGs for months is never cut off.
// A peer that makes us queue answers faster than it reads them (its receive side stalled,
// our sends stuck) is cut off here instead of buffered: 4096 frames are ~100 KiB.
inline constexpr uint32_t control_frames_queued_max = 4096;

// ---- mux: flood limits (mux/session/flood.h) --------------------------------------------------
// Frames that cost the sender a few bytes and us a lookup, an allocation or a queued answer,
// each limited per connection per second (a token bucket with one second of burst). Over a
// limit the connection is closed with ERROR(resource_exhausted, "flood: ...") naming it.

// RESET frames, and stream-scoped ERROR frames that end a stream (the same cancel), per
// second: rapid reset (open and cancel in a loop) makes us set up and tear down a stream
// and maybe start a handler per pair. 10,000/s is far above what cancellations of real
// calls reach (a caller cancelling every call of W2 at 1 M calls/s is an attack, not load).
inline constexpr uint32_t peer_resets_per_second_max = 10000;

// DATA frames with no payload and no END_STREAM: they deliver nothing and are never
// needed (our writer never sends one), yet each costs a frame decode and a stream lookup.
inline constexpr uint32_t empty_data_frames_per_second_max = 10000;

// PINGs (each makes us queue a PONG) and PONGs we did not ask for. We ping once per
// keepalive interval; 1000/s leaves room for any RTT-probing peer.
inline constexpr uint32_t pings_per_second_max = 1000;

// CREDIT frames: one per consumed chunk per stream is normal, 160k/s at 10 GiB/s of 64 KiB
// chunks; each costs a lookup and a writable-walk.
inline constexpr uint32_t credit_frames_per_second_max = 200000;

// GOAWAY frames: a peer sends one or two while draining; each makes us walk our streams.
inline constexpr uint32_t goaway_frames_per_second_max = 10;

// Frames of ignorable unknown kinds (SPEC §4: bit 7): skipped, but each is decoded and
// checked. A future extension sends a handful per stream, not tens of thousands a second.
inline constexpr uint32_t ignorable_frames_per_second_max = 10000;

// A frame whose first byte has arrived must be complete within this long, however slowly
// its bytes trickle in (slowloris: each byte would otherwise reset the dead-peer timer and
// hold the connection and its reassembly buffer forever). 5 s moves a whole 1 MiB frame at
// 1.7 Mbit/s, far below any storage network.
inline constexpr uint64_t frame_complete_timeout_ns = 5'000'000'000;

// A stream whose peer sent STOP (it reads no more) while our writer neither ends nor resets
// it is reset (stream_stopped) after this long: every write already fails at once, so a
// live writer notices within microseconds; 1 s only catches writers that never write
// again, whose stream state would otherwise live as long as the session.
inline constexpr uint64_t stopped_stream_close_timeout_ns = 1'000'000'000;

// Largest unary request a handler accepts unless it says otherwise (Registry::add_unary's
// UnaryLimits): the request is gathered whole before the handler runs, so this is what
// one call can make the server hold. Above it the call fails stream-scoped with
// resource_exhausted and a message naming the limit. 16 MiB covers a storage node's
// largest block writes as one call; bigger transfers are streams.
inline constexpr uint32_t unary_request_bytes_max = 16 * 1024 * 1024;

// Largest unary response a caller gathers (ConnectionOptions::call_response_bytes_max):
// a peer answering with more makes the call fail with resource_exhausted instead of
// growing the caller's buffer without bound. The loadgen's largest message, 64 MiB.
inline constexpr uint32_t unary_response_bytes_max = 64 * 1024 * 1024;

// Bytes the RPC layer of one connection buffers at once: unary requests being gathered
// (not yet complete) and copies of response rests waiting for credit. Each request is
// bounded by its handler's limit, but thousands of streams each holding a partial request
// (or a client that never reads its responses) would multiply it: over this total, the
// call whose bytes would pass it fails with resource_exhausted (retry later). Four
// maximal requests.
inline constexpr uint64_t connection_rpc_bytes_max = 64 * 1024 * 1024;

// A call that arrives with less time left than this is refused with deadline_exceeded
// before its handler starts: 10 us is less than a handler's own dispatch and reply on
// this class of machine, so starting it could only waste work on an answer nobody awaits.
inline constexpr uint64_t deadline_budget_ns_min = 10'000;

// Idle time after which a connection sends a PING to prove the peer alive.
inline constexpr uint64_t keepalive_interval_ns_default = 1'000'000'000;

// Silence after which the peer is declared dead and the connection closed (the session
// then resumes or fails). Three keepalive intervals: one lost PING is not a verdict.
inline constexpr uint64_t dead_peer_timeout_ns_default = 3 * keepalive_interval_ns_default;

// How long a session closed (or failed by what its peer sent) while a send was in flight
// keeps its socket for that send to complete, so that its last words (an ERROR on stream
// 0) follow it on a frame boundary: the smaller of this and the connection's
// dead_peer_timeout_ns. A peer that stopped reading gets the FIN without them, and waits
// for a resume it will be refused.
inline constexpr uint64_t closed_send_linger_ns_max = 1'000'000'000;

// ---- replay: held batches, acknowledgements and resume (replay/, mux/) ----------------

// Most bytes a session holds for replay: the batches sent and not yet acknowledged (whole
// batches: a partly acknowledged one is held until its last byte is). When a new batch
// would not fit, the writer is back-pressured until an ACK releases one, so this bounds
// both what a session holds for a resume and how far the sender runs ahead of the peer's
// ACKs. 16 MiB is ~3 ms of loopback traffic at ~5 GB/s, many times a LAN round trip plus
// the ACK interval below, so ACK batching alone never stalls a healthy connection; it is
// ~28 maximal send batches.
inline constexpr uint64_t replay_bytes_max = 16 * 1024 * 1024;

// The receiver acknowledges at least every this many position-space bytes. 1 MiB is a
// sixteenth of the default ring, so the bytes waiting for an ACK that is not yet due never
// back-pressure the sender, and one 32-byte ACK frame per MiB costs 0.003 % of the traffic
// (about 5000 ACKs/s at 5 GB/s).
inline constexpr uint64_t ack_interval_bytes = 1024 * 1024;

// ... or at the latest this long after the first unacknowledged byte arrived, when the
// receiver sends nothing it could piggy-back the ACK on. Bounds how long a trickle of bytes
// stays unreleased in the sender's ring (and so how much a resume replays); 5 ms caps a
// quiet connection at 200 ACK-only sends a second, so a thousand trickling connections
// cost 200k small sends a second at most, not a million as at 1 ms.
inline constexpr uint64_t ack_interval_ns = 5'000'000;

// How long a session waits for a new connection after its transport broke before it is
// lost (every stream fails with session_lost). Long enough to ride out a switch reboot or
// a process being rescheduled, short enough that a caller without its own deadline learns
// of a dead peer within seconds.
inline constexpr uint64_t resume_timeout_ns_default = 10'000'000'000;

// The dialing side's backoff between connect attempts while resuming: the first attempt
// goes at once, then the delay doubles from the minimum up to the maximum, each delay drawn
// uniformly from its upper half (jitter, so that many sessions that broke together do not
// redial in lockstep).
inline constexpr uint64_t redial_backoff_ns_min = 1'000'000;
inline constexpr uint64_t redial_backoff_ns_max = 500'000'000;

// Bytes held for replay by all detached sessions of one acceptor (their transport broke
// and they wait up to resume_timeout_ns for the dialer to come back). A client that pulls
// data, never acknowledges it and drops the connection leaves up to replay_bytes_max
// behind each time: without a cap, a loop of such drops pins memory for 10 s per drop.
// Over it, the session detached longest ago ends (session_lost). 256 MiB is sixteen full
// replay stores: a whole rack's sessions breaking at once still resume.
inline constexpr uint64_t detached_held_bytes_max = 256 * 1024 * 1024;

// Sockets one acceptor holds before their HELLO has arrived (each costs a pending read, a
// 1.2 KiB buffer and a timer, for up to hello_timeout_ns). Beyond it a new socket is closed
// at once: a connect flood cannot grow the list past ~5 MiB. One listen backlog's worth: a
// loop accepts a whole backlog in one iteration before any HELLO read completes, so a
// burst of legitimate connects (a cluster restarting) fits.
inline constexpr uint32_t pending_hellos_max = listen_backlog;

// How long mux::Acceptor waits for the dialer's HELLO on a new connection before closing it.
inline constexpr uint64_t hello_timeout_ns = 5'000'000'000;

// How long a handshake stage (mux/link/tls.h) may take, from the transport's start to an
// authenticated peer: the same budget as the HELLO that follows it, since a TLS 1.3
// handshake is one round trip more than the HELLO and a peer stalling in it holds a
// socket, a TLS state (~30 KiB in OpenSSL while handshaking) and a timer.
inline constexpr uint64_t handshake_timeout_ns = hello_timeout_ns;

// Plaintext of one TLS record (RFC 8446 §5.1: 2^14 bytes): what one decryption hands the
// session, and what one encryption takes (a send's parts are gathered into full records);
// two buffers of this size per loop thread, one each way.
inline constexpr std::size_t tls_record_plaintext_bytes = 16 * 1024;

// TLS 1.3 KeyUpdate messages a peer may send (mux/link/tls.h): each makes OpenSSL derive
// new traffic keys, and one with update_requested makes us encrypt and send a KeyUpdate
// back, so a flood of them, which costs the peer ~30 bytes each, turns into our CPU and our
// send queue. A peer gets tls_key_updates_free of them, plus one per
// tls_key_update_received_bytes of ciphertext it sent: a rekey per MiB is far more often
// than a TLS stack needs one (RFC 8446 §5.5: AES-GCM keys last ~2^24.5 full records,
// hundreds of GiB), and the work of one KeyUpdate is small next to decrypting a MiB. Over the budget the
// connection fails (IoError::handshake_failed, failure_text naming the limit). Counting
// bytes, not time, keeps the verdict independent of load.
inline constexpr uint32_t tls_key_updates_free = 16;
inline constexpr uint64_t tls_key_update_received_bytes = 1024 * 1024;

// Largest HELLO payload mux::Acceptor reads (SPEC §4.1 allows later versions to extend it).
inline constexpr uint32_t hello_payload_bytes_max = 1024;

// ---- mux/workers: streams served by application threads -------------------------------

// Slots of a worker stream's ring (mux/workers/worker_stream.h): deliveries a worker may
// have waiting before more wait on the loop side. The window bounds the bytes either way;
// the slots bound what the worker can take without the loop's help: 64 slots hold a whole
// 2 MiB window of 32 KiB deliveries, and their buffers keep their capacity (the slots of a
// 64 KiB-message stream hold ~4 MiB once warm).
inline constexpr uint32_t worker_stream_slots_default = 64;

// Received bytes of a worker stream the loop credits to the peer before the worker has
// released them (WorkerStreamOptions::credit_ahead_bytes). Without it the credit round
// trip passes through the worker's scheduling: a worker waiting for a CPU stops the
// sender once a window is out, however little work it has. With it a worker stream holds
// at most its window plus this (4 MiB with the defaults, as a stream of 64 KiB messages
// keeps in its slots once warm).
inline constexpr uint64_t worker_stream_credit_ahead_bytes_default = 2 * 1024 * 1024;

// How long a worker stream's reader or writer looks for its event before it sleeps on the
// futex (WorkerStreamOptions::spin_ns). 0: sleep at once. Workers usually outnumber the
// cores and share them with the loops, and a spinning worker takes the CPU its loop needs
// to produce what it waits for: W3 read by a worker on this 2-core machine (perf/worker_w3,
// perf/RESULTS.md) ran at 0.61x of W3 read on the loop with 20 us of spin and at 0.86x
// with none (the worker then used 4 % of a core, woken ~0.15 times per delivery). A worker
// with a core of its own may trade CPU for latency with a spin like the loop's.
inline constexpr uint64_t worker_spin_ns_default = 0;

// Calls waiting for a worker of a WorkerPool (mux/workers/worker_pool.h), across every loop
// that submits to it. Past it a new blocking call is refused with refused_stream
// (retryable, nothing was processed): a pool that falls behind pushes back on its callers
// at once rather than holding their requests while their deadlines run out. 1024 holds
// 16 connections' worth of W2 (64 calls in flight each) waiting at once. A power of two:
// the queue's ring is addressed by masked positions.
inline constexpr uint32_t worker_pool_queue_jobs_max = 1024;

// How long one idle worker of a WorkerPool looks for the next job before it sleeps on its
// futex (WorkerPoolOptions::spin_ns; the others sleep at once). 0: sleep at once. On this
// 2-core machine the spinner takes the CPU a loop needs: W8's W1 went from +6 us at p50
// (no spin) to +76 us (20 us of spin) and +92 us (50 us) (perf/blocking_w8, RESULTS.md).
// A pool with cores of its own may trade CPU for latency with a spin.
inline constexpr uint64_t worker_pool_spin_ns_default = 0;

// When a WorkerPool wakes another worker while one is awake (WorkerPoolOptions::
// wake_worth_ns): only when the jobs queued behind (times the pool's average job time)
// come to at least this much work, or when every awake worker has been in its job this
// long (it may be blocked). A wake-up costs the woken worker and the thread it preempts a
// context switch each: ~10 us of CPU apiece on this 2-core VM (perf record of W8, perf/
// RESULTS.md), and a worker woken for a few microseconds of work finds the queue drained
// by the one already awake. 20 us: about one wake-up's cost in CPU. 0: wake an idle worker
// whenever jobs wait and a wake is not on its way (the rule before; for comparisons).
inline constexpr uint64_t worker_pool_wake_worth_ns_default = 20'000;

// Threads of one WorkerPool at most: its idle workers are bits of one 64-bit word (the
// last two bits mark a wake on its way and the spinning worker), so a submitter finds one
// to wake with one read-modify-write.
inline constexpr uint32_t worker_pool_threads_max = 62;

// Threads of a WorkerPool unless its owner says otherwise: W8 of the workloads (a handler
// that blocks, on 4 workers).
inline constexpr uint32_t worker_pool_threads_default = 4;

// ---- compile-time relations ----------------------------------------------------------

static_assert((recv_buffer_count & (recv_buffer_count - 1)) == 0, "buffer ring size must be a power of two");
static_assert(recv_buffer_count <= 32768, "kernel limit for a provided-buffer ring");
static_assert(recv_buffer_bytes >= frame_header_bytes, "a receive buffer holds at least one header");
static_assert(frame_text_bytes_max + 8 <= frame_payload_bytes_max, "an ERROR or GOAWAY frame fits in one frame");
static_assert(dead_peer_timeout_ns_default > keepalive_interval_ns_default, "a peer gets at least one ping");
static_assert(data_chunk_bytes <= frame_payload_bytes_max, "a chunk fits in one frame");
static_assert(stream_batch_bytes_max <= send_batch_bytes_target, "one stream never fills a whole batch");
static_assert(stream_turn_bytes_min <= stream_batch_bytes_max, "a turn shrinks as more streams wait");
static_assert(stream_window_bytes_initial <= stream_window_bytes_max, "a window starts below its maximum");
static_assert(stream_window_bytes_initial <= stream_window_bytes_shared_max &&
                  stream_window_bytes_shared_max <= stream_window_bytes_max,
              "sharing a connection caps a window between its start and its maximum");
static_assert(stream_window_bytes_max <= connection_window_bytes_initial, "one stream cannot outgrow the connection");
static_assert(2 * (stream_window_bytes_max + worker_stream_credit_ahead_bytes_default) <= connection_window_bytes_initial,
              "a stalled worker stream holds at most half of the connection window");
static_assert(connection_window_bytes_initial <= window_bytes_limit, "credit counters fit the protocol limit");
static_assert(frame_payload_bytes_max <= stream_window_bytes_initial * 4, "a max frame is a few initial windows");
static_assert(loop_cq_entries >= 2 * loop_sq_entries, "multishot operations need CQ headroom");
static_assert((loop_sq_entries & (loop_sq_entries - 1)) == 0, "io_uring rounds SQ size to a power of two");
static_assert(replay_bytes_max >= 4 * (send_batch_bytes_target + data_chunk_bytes) + ack_interval_bytes,
              "several send batches and the bytes awaiting a due ACK are held at once");
static_assert(ack_interval_bytes * 4 <= replay_bytes_max, "ACK batching alone never back-pressures the sender");
static_assert(connection_window_bytes_initial + send_batch_bytes_target + data_chunk_bytes + ack_interval_bytes <=
                  replay_bytes_max,
              "flow control, not the replay bound, limits a healthy connection's bytes in flight");
static_assert(ack_interval_ns < keepalive_interval_ns_default, "a quiet receiver acknowledges before it pings");
static_assert(stream_window_bytes_min <= stream_window_bytes_initial &&
                  connection_window_bytes_min <= connection_window_bytes_initial,
              "the defaults are valid announcements");
static_assert(stream_window_bytes_min <= connection_window_bytes_min, "one stream fits the smallest connection");
static_assert(frame_complete_timeout_ns >= hello_timeout_ns, "a frame gets at least a HELLO's time");
static_assert(detached_held_bytes_max >= 4 * replay_bytes_max, "several detached sessions resume at once");
static_assert(unary_request_bytes_max <= connection_rpc_bytes_max, "one maximal request fits a connection");
static_assert(redial_backoff_ns_min <= redial_backoff_ns_max, "backoff grows from its minimum");
static_assert(redial_backoff_ns_max < resume_timeout_ns_default, "a resuming dialer gets several attempts");
static_assert(worker_stream_slots_default >= 2 && (worker_stream_slots_default & (worker_stream_slots_default - 1)) == 0,
              "a slot ring's size is a power of two");
static_assert(worker_pool_queue_jobs_max >= 2 && (worker_pool_queue_jobs_max & (worker_pool_queue_jobs_max - 1)) == 0,
              "the pool's queue is a ring of a power of two cells");
static_assert(worker_pool_threads_default >= 1 && worker_pool_threads_default <= worker_pool_threads_max,
              "the default pool fits the idle mask");
static_assert(worker_pool_threads_max <= 62, "one bit per worker, the waking and spinner bits in a 64-bit mask");

}  // namespace ringmux::limits
