// What callgrind counts for a copy and a checksum of a given size, to read the 1 MiB rows of
// perf/callgrind.sh: glibc copies large blocks with `rep movsb`, which callgrind counts as
// one instruction per byte, and small ones with vector loops (a few bytes per instruction).
//   callgrind_calibrate CHUNK_BYTES ROUNDS
// Each round copies 1 MiB in blocks of CHUNK_BYTES (memcpy) and hashes it in blocks of the
// same size (XXH3_64bits, the wire checksum). Run under callgrind with two ROUNDS: the
// difference divided by the difference in MiB is what a MiB costs.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

// The bytes each round copies and hashes.
static const size_t round_bytes = 1024 * 1024;

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: callgrind_calibrate CHUNK_BYTES ROUNDS\n");
    return 2;
  }
  const size_t chunk = strtoul(argv[1], NULL, 0);
  const long rounds = strtol(argv[2], NULL, 0);
  if (chunk == 0 || round_bytes % chunk != 0 || rounds < 0) {
    fprintf(stderr, "callgrind_calibrate: CHUNK_BYTES must divide 1 MiB\n");
    return 2;
  }
  unsigned char* from = malloc(round_bytes);
  unsigned char* to = malloc(round_bytes);
  if (from == NULL || to == NULL) return 1;
  memset(from, 0x6b, round_bytes);
  XXH64_hash_t hash = 0;
  for (long round = 0; round < rounds; round++) {
    for (size_t at = 0; at < round_bytes; at += chunk) memcpy(to + at, from + at, chunk);
    for (size_t at = 0; at < round_bytes; at += chunk) hash ^= XXH3_64bits(to + at, chunk);
    from[round % round_bytes]++;
  }
  // Printed, so that neither loop can be left out.
  printf("%llx\n", (unsigned long long)hash);
  free(from);
  free(to);
  return 0;
}
