/* The popcount limit of one core: Hamming distances of 512-bit codes held in cache, with
 * nothing else to do (no top-k, no heap). Two kernels, the faster one counts:
 *   scalar: XOR + POPCNT over 8 uint64 words per comparison, 4 queries per pass over the
 *           codes so loads are shared;
 *   avx2:   XOR of two 256-bit halves, nibble lookup with PSHUFB, byte sums with PSADBW
 *           (Mula, Kurz & Lemire 2018), one query per pass.
 * Compiled and run by benchmarks/search.py (gcc -O3 -march=native). Prints the best
 * comparisons per second first, then each kernel's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define W 8  /* 64-bit words per 512-bit code */

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static double scalar(const uint64_t *xb, long n, long reps, uint64_t q[4][W], uint32_t *sink) {
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
    *sink += best[0] + best[1] + best[2] + best[3];
    return 4.0 * n * reps / dt;
}

#ifdef __AVX2__
static double avx2(const uint64_t *xb, long n, long reps, uint32_t *sink) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(15);
    __m256i qa = _mm256_set1_epi8(3), qb = _mm256_set1_epi8(5);
    uint32_t best = 9999;
    double t0 = now();
    for (long r = 0; r < reps; r++) {
        for (long i = 0; i < n; i++) {
            const __m256i *c = (const __m256i *)(xb + i * W);
            __m256i a = _mm256_xor_si256(_mm256_load_si256(c), qa);
            __m256i b = _mm256_xor_si256(_mm256_load_si256(c + 1), qb);
            __m256i ca = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(a, low)),
                                         _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(a, 4), low)));
            __m256i cb = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(b, low)),
                                         _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(b, 4), low)));
            __m256i sad = _mm256_sad_epu8(_mm256_add_epi8(ca, cb), _mm256_setzero_si256());
            __m128i h = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
            uint32_t d = (uint32_t)(_mm_cvtsi128_si32(h) + _mm_extract_epi32(h, 2));
            best = d < best ? d : best;
        }
        qa = _mm256_add_epi8(qa, _mm256_set1_epi8((char)best));
    }
    double dt = now() - t0;
    *sink += best;
    return (double)n * reps / dt;
}
#endif

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 8192;      /* 8192 codes = 512 KiB: fits in L2/L3 */
    long reps = argc > 2 ? atol(argv[2]) : 2000;
    uint64_t *xb = aligned_alloc(64, n * W * 8), q[4][W];
    uint64_t s = 88172645463325252ull;
    for (long i = 0; i < n * W; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; xb[i] = s; }
    for (int j = 0; j < 4; j++) for (int w = 0; w < W; w++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; q[j][w] = s; }
    uint32_t sink = 0;
    double sc = scalar(xb, n, reps, q, &sink), best = sc, vec = 0;
#ifdef __AVX2__
    vec = avx2(xb, n, reps, &sink);
    best = vec > best ? vec : best;
#endif
    printf("%.4e comparisons/s (n=%ld; scalar %.4e, avx2 %.4e; sink %u)\n", best, n, sc, vec, sink);
    return 0;
}
