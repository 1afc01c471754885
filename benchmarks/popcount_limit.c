/* The popcount limit of one core: Hamming distances of 512-bit codes held in cache, with
 * nothing else to do (no top-k, no heap). XOR + POPCNT over 8 uint64 words per comparison,
 * 4 queries per pass over the codes so loads are shared. Compiled and run by
 * benchmarks/search.py (gcc -O3 -march=native); prints comparisons per second. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define W 8  /* 64-bit words per 512-bit code */

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 8192;      /* 8192 codes = 512 KiB: fits in L2/L3 */
    long reps = argc > 2 ? atol(argv[2]) : 2000;
    uint64_t *xb = aligned_alloc(64, n * W * 8), q[4][W];
    uint64_t s = 88172645463325252ull;
    for (long i = 0; i < n * W; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; xb[i] = s; }
    for (int j = 0; j < 4; j++) for (int w = 0; w < W; w++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; q[j][w] = s; }
    uint32_t best[4] = {9999, 9999, 9999, 9999};
    double t0 = now();
    for (long r = 0; r < reps; r++) {
        for (long i = 0; i < n; i++) {
            const uint64_t *c = xb + i * W;
            for (int j = 0; j < 4; j++) {
                uint32_t d = 0;
                for (int w = 0; w < W; w++) d += __builtin_popcountll(c[w] ^ q[j][w]);
                best[j] = d < best[j] ? d : best[j];   /* keep the result live: the cheapest "search" */
            }
        }
        q[r & 3][r & 7] ^= best[0];  /* stop the compiler hoisting work out of the repeat loop */
    }
    double dt = now() - t0;
    printf("%.4e comparisons/s (n=%ld, best %u)\n", 4.0 * n * reps / dt, n, best[0] + best[1] + best[2] + best[3]);
    return 0;
}
