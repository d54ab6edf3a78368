// ktls_probe: does this kernel run kTLS (the `tls` ULP) on a loopback TCP pair, with plain
// send/recv and with io_uring send/recv?
//
//   gcc -O2 -Wall -Wextra -o /tmp/ktls_probe tests/vm/ktls_probe.c -luring
//   /tmp/ktls_probe                                       # this machine's kernel
//   tests/vm/run_in_vm.sh -- /tmp/ktls_probe              # Debian's 6.1 kernel under qemu
//
// The dialer's socket gets TLS_TX, the accepted socket TLS_RX, both with one AES-128-GCM
// TLS 1.3 key. "hello" goes through send/recv, then "world" through IORING_OP_SEND /
// IORING_OP_RECV. Before the receiver turns kTLS on, it peeks at the bytes on the wire: they
// must be one TLS 1.3 application-data record, the plaintext nowhere in it.
//
// Exit: 0 every step passed; 1 a step failed; 2 the kernel has no `tls` ULP (ENOENT).
#define _GNU_SOURCE  // memmem
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tls.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

enum {
  exit_pass = 0,
  exit_fail = 1,
  exit_no_ktls = 2,
  // A TLS 1.3 record: 5-byte header, then the payload, its 1-byte inner content type and
  // the 16-byte AES-GCM tag.
  record_header_bytes = 5,
  record_overhead_bytes = record_header_bytes + 1 + 16,
  // Waiting for loopback bytes: this many polls of this long each, at most.
  wait_polls_max = 20,
  wait_poll_ms = 500,
  ring_entries = 4,
};

static const char plain_message[] = "hello";
static const char uring_message[] = "world";

static int fail(const char* what) {
  printf("ktls_probe: FAIL: %s: %s (errno %d)\n", what, strerror(errno), errno);
  return exit_fail;
}

static int fail_io(const char* what, int res) {
  errno = -res;
  return fail(what);
}

// A connected loopback pair: *dialer from connect(), *acceptor from accept().
static int make_pair(int* dialer, int* acceptor) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) return fail("socket");
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t address_size = sizeof address;
  if (bind(listener, (struct sockaddr*)&address, sizeof address) != 0) return fail("bind 127.0.0.1:0");
  if (listen(listener, 1) != 0) return fail("listen");
  if (getsockname(listener, (struct sockaddr*)&address, &address_size) != 0) return fail("getsockname");
  *dialer = socket(AF_INET, SOCK_STREAM, 0);
  if (*dialer < 0) return fail("socket");
  if (connect(*dialer, (struct sockaddr*)&address, sizeof address) != 0) return fail("connect");
  *acceptor = accept(listener, NULL, NULL);
  if (*acceptor < 0) return fail("accept");
  close(listener);
  printf("ktls_probe: loopback pair on 127.0.0.1:%u\n", ntohs(address.sin_port));
  return exit_pass;
}

static int attach_tls_ulp(int fd, const char* role) {
  if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0) {
    printf("ktls_probe: TCP_ULP \"tls\" on the %s socket: ok\n", role);
    return exit_pass;
  }
  if (errno == ENOENT) {
    printf("ktls_probe: TCP_ULP \"tls\" on the %s socket: ENOENT: this kernel has no tls module (no kTLS)\n", role);
    return exit_no_ktls;
  }
  return fail("setsockopt TCP_ULP tls");
}

static int set_key(int fd, int direction, const char* name) {
  struct tls12_crypto_info_aes_gcm_128 crypto = {0};
  crypto.info.version = TLS_1_3_VERSION;
  crypto.info.cipher_type = TLS_CIPHER_AES_GCM_128;
  for (size_t i = 0; i < sizeof crypto.key; i++) crypto.key[i] = (unsigned char)(0x40 + i);
  for (size_t i = 0; i < sizeof crypto.iv; i++) crypto.iv[i] = (unsigned char)(0x10 + i);
  for (size_t i = 0; i < sizeof crypto.salt; i++) crypto.salt[i] = (unsigned char)(0x20 + i);
  if (setsockopt(fd, SOL_TLS, direction, &crypto, sizeof crypto) != 0) return fail(name);
  printf("ktls_probe: %s with TLS 1.3 AES-128-GCM: ok\n", name);
  return exit_pass;
}

// Peeks until `bytes` are queued on fd (bounded), into buffer.
static int peek_exactly(int fd, unsigned char* buffer, size_t bytes) {
  for (int poll_index = 0; poll_index < wait_polls_max; poll_index++) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_poll_ms) < 0) return fail("poll");
    const ssize_t n = recv(fd, buffer, bytes, MSG_PEEK | MSG_DONTWAIT);
    if (n == (ssize_t)bytes) return exit_pass;
    if (n < 0 && errno != EAGAIN) return fail("recv MSG_PEEK");
  }
  errno = ETIMEDOUT;
  return fail("waiting for the record on the wire");
}

// The first record on the wire: the header of a TLS 1.3 application-data record of the
// right length, and the plaintext nowhere in it.
static int check_wire(int fd) {
  unsigned char record[record_overhead_bytes + sizeof plain_message];
  const size_t record_bytes = record_overhead_bytes + strlen(plain_message);
  const int rc = peek_exactly(fd, record, record_bytes);
  if (rc != exit_pass) return rc;
  const size_t length = (size_t)record[3] << 8 | record[4];
  printf("ktls_probe: on the wire: %zu bytes, header %02x %02x %02x %02x %02x\n", record_bytes, record[0], record[1],
         record[2], record[3], record[4]);
  if (record[0] != 0x17 || record[1] != 0x03 || record[2] != 0x03 || length != record_bytes - record_header_bytes) {
    printf("ktls_probe: FAIL: not one TLS application-data record of %zu bytes\n", record_bytes);
    return exit_fail;
  }
  if (memmem(record, record_bytes, plain_message, strlen(plain_message)) != NULL) {
    printf("ktls_probe: FAIL: the plaintext is on the wire\n");
    return exit_fail;
  }
  return exit_pass;
}

static int expect(const char* got, ssize_t got_bytes, const char* want, const char* how) {
  if (got_bytes != (ssize_t)strlen(want) || memcmp(got, want, strlen(want)) != 0) {
    printf("ktls_probe: FAIL: %s received %zd bytes, not \"%s\"\n", how, got_bytes, want);
    return exit_fail;
  }
  printf("ktls_probe: %s: \"%s\" sent encrypted, received decrypted: ok\n", how, want);
  return exit_pass;
}

// One operation through the ring; its result (bytes or -errno).
static int ring_run(struct io_uring* ring) {
  int rc = io_uring_submit(ring);
  if (rc != 1) return rc < 0 ? rc : -EIO;
  struct io_uring_cqe* cqe = NULL;
  rc = io_uring_wait_cqe(ring, &cqe);
  if (rc != 0) return rc;
  rc = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  return rc;
}

static int uring_round_trip(int sender, int receiver) {
  struct io_uring ring;
  const int rc = io_uring_queue_init(ring_entries, &ring, 0);
  if (rc != 0) return fail_io("io_uring_queue_init", rc);
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_send(sqe, sender, uring_message, strlen(uring_message), 0);
  const int sent = ring_run(&ring);
  if (sent < 0) return fail_io("IORING_OP_SEND", sent);
  char got[sizeof uring_message] = {0};
  sqe = io_uring_get_sqe(&ring);
  io_uring_prep_recv(sqe, receiver, got, sizeof got, 0);
  const int received = ring_run(&ring);
  if (received < 0) return fail_io("IORING_OP_RECV", received);
  io_uring_queue_exit(&ring);
  return expect(got, received, uring_message, "io_uring IORING_OP_SEND/IORING_OP_RECV");
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct utsname host;
  if (uname(&host) == 0) printf("ktls_probe: kernel %s\n", host.release);
  int dialer = -1, acceptor = -1;
  int rc = make_pair(&dialer, &acceptor);
  if (rc == exit_pass) rc = attach_tls_ulp(dialer, "dialer");
  if (rc == exit_pass) rc = set_key(dialer, TLS_TX, "TLS_TX on the dialer");
  if (rc == exit_pass && send(dialer, plain_message, strlen(plain_message), 0) != (ssize_t)strlen(plain_message)) {
    rc = fail("send");
  }
  if (rc == exit_pass) rc = check_wire(acceptor);
  if (rc == exit_pass) rc = attach_tls_ulp(acceptor, "acceptor");
  if (rc == exit_pass) rc = set_key(acceptor, TLS_RX, "TLS_RX on the acceptor");
  if (rc == exit_pass) {
    char got[sizeof plain_message] = {0};
    const ssize_t n = recv(acceptor, got, sizeof got, 0);
    rc = n < 0 ? fail("recv") : expect(got, n, plain_message, "send/recv");
  }
  if (rc == exit_pass) rc = uring_round_trip(dialer, acceptor);
  printf("ktls_probe: %s\n", rc == exit_pass ? "PASS" : rc == exit_no_ktls ? "NO KTLS" : "FAIL");
  return rc;
}
