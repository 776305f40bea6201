/* y = x Wᵀ for int4 group-quantized W (w = q * scale + min per group of g input features) on AVX512-VNNI:
 * each row of x is quantized to int8 per group (one scale per g values, round to nearest), then the int4 x int8
 * products are summed in int32 by vpdpbusd, 16 output features at a time, and each group's sum is scaled in
 * float32. The weight is read once per row block at 4 bits, with no widening to 16 bit.
 *
 * Layout (vnni.py packs it):
 *   w:  [N/16][K/8][64] bytes; for output block b and input octet o, byte 4j+i holds
 *       q[16b+j][8o+i] in its low nibble and q[16b+j][8o+4+i] in its high nibble (j < 16, i < 4)
 *   sm: [N/16][K/g][32] bfloat16: the block's 16 scales of group k/g, then its 16 mins
 * Each row of x is computed alone, by the same instructions in the same order whatever the other rows are
 * (batch-invariant); threads split the output blocks, never the sum over K. Built by vnni.py with OpenMP from
 * the libgomp that torch loads, so torch and this kernel share one thread pool.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_GROUP 256

static inline __m512 bf16x16(const uint16_t *p) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}

/* One row's group j: int8 codes (|x| max -> 127), their scale, and the sum of the values they stand for. A NaN or
 * infinity makes the scale NaN, so it reaches the row's outputs as in a float product instead of vanishing. */
static void quantize_group(const uint16_t *x, int g, int8_t *q, float *scale, float *sum) {
    float v[MAX_GROUP], amax = 0.f, finite = 0.f;
    for (int t = 0; t < g; t++) {
        v[t] = bf16_to_float(x[t]);
        float a = fabsf(v[t]);
        amax = a > amax ? a : amax;
        finite += v[t] * 0.f;  /* NaN once any value is NaN or infinite */
    }
    float d = finite == 0.f ? amax / 127.f : NAN, inv = d > 0.f ? 1.f / d : 0.f;
    int total = 0;
    for (int t = 0; t < g; t++) {
        float r = nearbyintf(v[t] * inv);
        r = r > 127.f ? 127.f : (r < -127.f ? -127.f : r);
        q[t] = (int8_t)r;
        total += q[t];
    }
    *scale = d;
    *sum = d * (float)total;
}

static void block_row(const int8_t *xq, const float *xd, const float *xs, int groups, int g,
                      const uint8_t *wb, const uint16_t *smb, uint16_t *out) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    const int octets = g / 8;
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < groups; j++) {
        __m512i lo_sum = _mm512_setzero_si512(), hi_sum = _mm512_setzero_si512();
        const uint8_t *wg = wb + (int64_t)j * octets * 64;
        const int32_t *xg = (const int32_t *)(xq + (int64_t)j * g);
        for (int o = 0; o < octets; o++) {
            __m512i v = _mm512_loadu_si512(wg + o * 64);
            lo_sum = _mm512_dpbusd_epi32(lo_sum, _mm512_and_si512(v, low), _mm512_set1_epi32(xg[2 * o]));
            hi_sum = _mm512_dpbusd_epi32(hi_sum, _mm512_and_si512(_mm512_srli_epi16(v, 4), low),
                                         _mm512_set1_epi32(xg[2 * o + 1]));
        }
        __m512 scale = bf16x16(smb + j * 32), mins = bf16x16(smb + j * 32 + 16);
        __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(lo_sum, hi_sum));
        acc = _mm512_fmadd_ps(_mm512_mul_ps(scale, _mm512_set1_ps(xd[j])), dot, acc);
        acc = _mm512_fmadd_ps(mins, _mm512_set1_ps(xs[j]), acc);
    }
    _mm256_storeu_si256((__m256i *)out, (__m256i)_mm512_cvtneps_pbh(acc));
}

/* x [M, K] bf16, y [M, N] bf16; returns 0, or -1 when scratch memory could not be had. */
int int4_vnni_mm(const uint16_t *x, int64_t M, int K, int g, const uint8_t *w, const uint16_t *sm, int N,
                 uint16_t *y, int threads) {
    const int groups = K / g, blocks = N / 16;
    int8_t *xq = malloc((size_t)M * K);
    float *xd = malloc(sizeof(float) * (size_t)M * groups), *xs = malloc(sizeof(float) * (size_t)M * groups);
    if (!xq || !xd || !xs) {
        free(xq), free(xd), free(xs);
        return -1;
    }
    for (int64_t m = 0; m < M; m++)
        for (int j = 0; j < groups; j++)
            quantize_group(x + m * K + (int64_t)j * g, g, xq + m * K + (int64_t)j * g, xd + m * groups + j,
                           xs + m * groups + j);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < blocks; b++)
        for (int64_t m = 0; m < M; m++)
            block_row(xq + m * K, xd + m * groups, xs + m * groups, groups, g, w + (int64_t)b * (K / 8) * 64,
                      sm + (int64_t)b * groups * 32, y + m * N + (int64_t)b * 16);
    free(xq), free(xd), free(xs);
    return 0;
}
