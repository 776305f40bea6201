/* The decode kernels of `4-bit` / AWQ `Int4` and `8-bit` on CPU (vnni.py builds and drives them): integer dot
 * products over weights in the "VNNI layout" (4 consecutive input bytes per output feature), compiled for
 * AVX512-VNNI (vpdpbusd, 16 output features per vector) or, on CPUs without it, AVX2 (vpmaddubsw + vpmaddwd,
 * 8 output features per vector, two vectors per block of 16). vnni.py picks the instruction set from the CPU's flags;
 * both read the same layout and give the same sums (integer) up to the order of the float32 group scaling.
 *
 * Each row of x is quantized to int8 per group of g input features (one scale per group, |x| max -> 127, round to
 * nearest), as llama.cpp does for q8_0. The integer products of a group are summed in int32 and the group's sum is
 * scaled in float32. The weight is read once per row block at 4 or 8 bits, with no widening to 16 bit.
 *
 * int4_vnni_mm: int4 group-quantized W (w = q * scale + min per group of g input features).
 *   w:  [N/16][K/8][64] bytes; for output block b and input octet o, byte 4j+i holds
 *       q[16b+j][8o+i] in its low nibble and q[16b+j][8o+4+i] in its high nibble (j < 16, i < 4)
 *   sm: [N/16][K/g][32] bfloat16: the block's 16 scales of group k/g, then its 16 mins
 * int8_vnni_mm: int8 W with one scale per output feature (w = q * s, q in -127..127).
 *   w:  [N/16][K/4][64] bytes; for output block b and input quad o, byte 4j+i holds q[16b+j][4o+i] (int8)
 *   s:  [N] float32, the output features' scales
 *
 * Each row of x is computed alone, by the same instructions in the same order whatever the other rows are
 * (batch-invariant); threads split the output blocks, never the sum over K. Built by vnni.py with OpenMP from
 * the libgomp that torch loads, so torch and these kernels share one thread pool.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if !(defined(__AVX512VNNI__) && defined(__AVX512BF16__)) && !(defined(__AVX2__) && defined(__FMA__))
#error "build with AVX512-VNNI and AVX512-BF16, or with AVX2 and FMA"
#endif

#define MAX_GROUP 256

typedef void (*block_fn)(const int8_t *xq, const float *xd, const float *xs, const int32_t *xt, int groups, int g,
                         const uint8_t *wb, const void *scales, uint16_t *out);

static inline float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}

/* One row's group: int8 codes (|x| max -> 127), their scale, the sum of the values they stand for and the sum of
 * the codes. A NaN or infinity makes the scale NaN, so it reaches the row's outputs as in a float product instead
 * of vanishing. */
static void quantize_group(const uint16_t *x, int g, int8_t *q, float *scale, float *sum, int32_t *codes) {
    float v[MAX_GROUP], amax = 0.f, finite = 0.f;
    for (int t = 0; t < g; t++) {
        v[t] = bf16_to_float(x[t]);
        float a = fabsf(v[t]);
        amax = a > amax ? a : amax;
        finite += v[t] * 0.f; /* NaN once any value is NaN or infinite */
    }
    float d = finite == 0.f ? amax / 127.f : NAN, inv = d > 0.f ? 1.f / d : 0.f;
    int total = 0;
    for (int t = 0; t < g; t++) {
        float r = nearbyintf(v[t] * inv);
        r = r > 127.f ? 127.f : (r < -127.f ? -127.f : r);
        q[t] = r == r ? (int8_t)r : 0;
        total += q[t];
    }
    *scale = d;
    *sum = d * (float)total;
    *codes = total;
}

#if defined(__AVX512VNNI__) && defined(__AVX512BF16__)

static inline __m512 bf16x16(const uint16_t *p) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

static void block_row4(const int8_t *xq, const float *xd, const float *xs, const int32_t *xt, int groups, int g,
                       const uint8_t *wb, const void *scales, uint16_t *out) {
    const uint16_t *smb = scales;
    const __m512i low = _mm512_set1_epi8(0x0F);
    const int octets = g / 8;
    __m512 acc = _mm512_setzero_ps();
    (void)xt;
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

/* vpdpbusd multiplies unsigned bytes by signed ones: the weight's bytes, flipped to q + 128, are the unsigned side,
 * and each group's sum of the row's codes times 128 is taken off again in int32 (exact). */
static void block_row8(const int8_t *xq, const float *xd, const float *xs, const int32_t *xt, int groups, int g,
                       const uint8_t *wb, const void *scales, uint16_t *out) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const int quads = g / 4;
    __m512 acc = _mm512_setzero_ps();
    (void)xs;
    for (int j = 0; j < groups; j++) {
        const uint8_t *wg = wb + (int64_t)j * quads * 64;
        const int32_t *xg = (const int32_t *)(xq + (int64_t)j * g);
        __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
        for (int o = 0; o < quads; o += 2) {
            __m512i v0 = _mm512_xor_si512(_mm512_loadu_si512(wg + o * 64), flip);
            __m512i v1 = _mm512_xor_si512(_mm512_loadu_si512(wg + (o + 1) * 64), flip);
            even = _mm512_dpbusd_epi32(even, v0, _mm512_set1_epi32(xg[o]));
            odd = _mm512_dpbusd_epi32(odd, v1, _mm512_set1_epi32(xg[o + 1]));
        }
        __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(even, odd), _mm512_set1_epi32(128 * xt[j]));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(xd[j]), acc);
    }
    acc = _mm512_mul_ps(acc, _mm512_loadu_ps((const float *)scales));
    _mm256_storeu_si256((__m256i *)out, (__m256i)_mm512_cvtneps_pbh(acc));
}

#else /* AVX2 */

static inline __m256 bf16x8(const uint16_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

/* float32 -> bfloat16, round to nearest even, NaN kept a (quiet) NaN: what vcvtneps2bf16 does. */
static inline void store_bf16x8(uint16_t *out, __m256 f) {
    __m256i u = _mm256_castps_si256(f);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    rounded = _mm256_blendv_epi8(rounded, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
    __m256i high = _mm256_srli_epi32(rounded, 16);
    __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
    _mm_storeu_si128((__m128i *)out, packed);
}

/* The int16 sums of 8 output features' int4 x int8 products over one octet, in pairs: vpmaddubsw (unsigned nibble
 * times signed code, pairs summed in int16: at most 2 * 15 * 127 = 3810 each, 7620 for both nibbles). Four octets'
 * sums still fit int16 (30480), so they are added there and widened by vpmaddwd once per four. */
static inline __m256i octet4(__m256i v, __m256i a_lo, __m256i a_hi) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(v, low), a_lo);
    __m256i hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), a_hi);
    return _mm256_add_epi16(lo, hi);
}

static void block_row4(const int8_t *xq, const float *xd, const float *xs, const int32_t *xt, int groups, int g,
                       const uint8_t *wb, const void *scales, uint16_t *out) {
    const uint16_t *smb = scales;
    const __m256i ones = _mm256_set1_epi16(1);
    const int octets = g / 8;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    (void)xt;
    for (int j = 0; j < groups; j++) {
        __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
        const uint8_t *wg = wb + (int64_t)j * octets * 64;
        const int32_t *xg = (const int32_t *)(xq + (int64_t)j * g);
        for (int first = 0; first < octets; first += 4) {
            __m256i part0 = _mm256_setzero_si256(), part1 = _mm256_setzero_si256();
            for (int o = first; o < first + 4 && o < octets; o++) {
                __m256i a_lo = _mm256_set1_epi32(xg[2 * o]), a_hi = _mm256_set1_epi32(xg[2 * o + 1]);
                part0 = _mm256_add_epi16(part0, octet4(_mm256_loadu_si256((const __m256i *)(wg + o * 64)), a_lo, a_hi));
                part1 = _mm256_add_epi16(part1,
                                         octet4(_mm256_loadu_si256((const __m256i *)(wg + o * 64 + 32)), a_lo, a_hi));
            }
            sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(part0, ones));
            sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(part1, ones));
        }
        const uint16_t *sg = smb + j * 32;
        __m256 d = _mm256_set1_ps(xd[j]), s = _mm256_set1_ps(xs[j]);
        acc0 = _mm256_fmadd_ps(_mm256_mul_ps(bf16x8(sg), d), _mm256_cvtepi32_ps(sum0), acc0);
        acc0 = _mm256_fmadd_ps(bf16x8(sg + 16), s, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_mul_ps(bf16x8(sg + 8), d), _mm256_cvtepi32_ps(sum1), acc1);
        acc1 = _mm256_fmadd_ps(bf16x8(sg + 24), s, acc1);
    }
    store_bf16x8(out, acc0);
    store_bf16x8(out + 8, acc1);
}

/* The int32 sums of 8 output features' int8 x int8 products over one quad: vpmaddubsw needs one unsigned side, so
 * the code's magnitude is that side and its sign moves onto the weight (vpsignb), as llama.cpp does: a pair sums to
 * at most 2 * 127 * 127, no saturation. */
static inline __m256i quad8(__m256i v, __m256i a_abs, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a_abs, _mm256_sign_epi8(v, a)), _mm256_set1_epi16(1));
}

static void block_row8(const int8_t *xq, const float *xd, const float *xs, const int32_t *xt, int groups, int g,
                       const uint8_t *wb, const void *scales, uint16_t *out) {
    const int quads = g / 4;
    const float *sb = scales;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    (void)xs, (void)xt;
    for (int j = 0; j < groups; j++) {
        const uint8_t *wg = wb + (int64_t)j * quads * 64;
        const int32_t *xg = (const int32_t *)(xq + (int64_t)j * g);
        __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
        for (int o = 0; o < quads; o++) {
            __m256i a = _mm256_set1_epi32(xg[o]), a_abs = _mm256_abs_epi8(a);
            sum0 = _mm256_add_epi32(sum0, quad8(_mm256_loadu_si256((const __m256i *)(wg + o * 64)), a_abs, a));
            sum1 = _mm256_add_epi32(sum1, quad8(_mm256_loadu_si256((const __m256i *)(wg + o * 64 + 32)), a_abs, a));
        }
        __m256 d = _mm256_set1_ps(xd[j]);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum0), d, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum1), d, acc1);
    }
    store_bf16x8(out, _mm256_mul_ps(acc0, _mm256_loadu_ps(sb)));
    store_bf16x8(out + 8, _mm256_mul_ps(acc1, _mm256_loadu_ps(sb + 8)));
}

#endif

/* x [M, K] bf16 quantized per group, then each output block of each row by `block`; `w_block` and `s_block` are
 * one block's weight bytes and scale elements (of `s_size` bytes). Returns 0, or -1 when scratch memory could
 * not be had. */
static int product(block_fn block, const uint16_t *x, int64_t M, int K, int g, const uint8_t *w, int64_t w_block,
                   const char *s, int64_t s_block, int N, uint16_t *y, int threads) {
    const int groups = K / g, blocks = N / 16;
    int8_t *xq = malloc((size_t)M * K);
    float *xd = malloc(sizeof(float) * (size_t)M * groups), *xs = malloc(sizeof(float) * (size_t)M * groups);
    int32_t *xt = malloc(sizeof(int32_t) * (size_t)M * groups);
    if (!xq || !xd || !xs || !xt) {
        free(xq), free(xd), free(xs), free(xt);
        return -1;
    }
    for (int64_t m = 0; m < M; m++)
        for (int j = 0; j < groups; j++) {
            int64_t at = m * groups + j;
            quantize_group(x + m * K + (int64_t)j * g, g, xq + m * K + (int64_t)j * g, xd + at, xs + at, xt + at);
        }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < blocks; b++)
        for (int64_t m = 0; m < M; m++)
            block(xq + m * K, xd + m * groups, xs + m * groups, xt + m * groups, groups, g, w + b * w_block,
                  s + b * s_block, y + m * N + (int64_t)b * 16);
    free(xq), free(xd), free(xs), free(xt);
    return 0;
}

/* x [M, K] bf16, y [M, N] bf16 (int4 weight, layout above). */
int int4_vnni_mm(const uint16_t *x, int64_t M, int K, int g, const uint8_t *w, const uint16_t *sm, int N,
                 uint16_t *y, int threads) {
    return product(block_row4, x, M, K, g, w, (int64_t)(K / 8) * 64, (const char *)sm,
                   (int64_t)(K / g) * 32 * sizeof(uint16_t), N, y, threads);
}

/* x [M, K] bf16, y [M, N] bf16 (int8 weight, layout above). */
int int8_vnni_mm(const uint16_t *x, int64_t M, int K, int g, const uint8_t *w, const float *s, int N, uint16_t *y,
                 int threads) {
    return product(block_row8, x, M, K, g, w, (int64_t)(K / 4) * 64, (const char *)s, 16 * sizeof(float), N, y,
                   threads);
}
