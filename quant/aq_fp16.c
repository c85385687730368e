/* aq_fp16.c — IEEE binary16 / bfloat16 conversions by bit manipulation (no compiler half type, no
 * F16C intrinsics), so the rounding is exactly round-to-nearest-even on every host.
 * Source: IEEE 754-2008 §3.6 (binary16 = 1 sign, 5 exponent (bias 15), 10 fraction bits) and §4.3.1
 * (roundTiesToEven); NUMERICS.md "Shapes and layouts". */
#include "aq.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

uint16_t aq_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {                          /* inf or NaN */
        if (x == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x03ffu));   /* quiet NaN, payload kept */
    }
    /* 65520 = 65504 + half an ulp: ties round to the odd-less neighbour, which is inf. */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (x < 0x38800000u) {                           /* |f| < 2^-14: fp16 subnormal or zero */
        if (x <= 0x33000000u) return sign;           /* |f| <= 2^-25: rounds (ties to even) to 0 */
        uint32_t e = x >> 23;                        /* 102 .. 112 */
        uint32_t mant = (x & 0x007fffffu) | 0x00800000u;
        uint32_t shift = 126u - e;                   /* value / 2^-24 = mant >> shift */
        uint32_t m = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (m & 1u))) m++;
        return (uint16_t)(sign | m);                 /* m == 0x400 is the smallest normal: correct */
    }
    uint32_t h = (((x >> 23) - 112u) << 10) | ((x >> 13) & 0x03ffu);
    uint32_t rem = x & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;   /* carry into the exponent is right */
    return (uint16_t)(sign | h);
}

float aq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x03ffu;
    if (e == 0x1fu) return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        /* subnormal: m * 2^-24, exact in fp32 */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

float aq_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

int aq_f32_to_f16_checked(const float *src, uint16_t *dst, size_t n, const char *what, char *err) {
    for (size_t i = 0; i < n; i++) {
        float v = src[i];
        if (!isfinite(v)) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: non-finite value %g at flat index %zu",
                              what ? what : "tensor", (double)v, i);
            return -1;
        }
        uint16_t h = aq_f32_to_f16(v);
        if ((h & 0x7c00u) == 0x7c00u) {
            if (err) snprintf(err, AX_ERR_LEN,
                              "%s: value %g at flat index %zu overflows fp16 (|v| > 65504 after rounding)",
                              what ? what : "tensor", (double)v, i);
            return -1;
        }
        dst[i] = h;
    }
    return 0;
}
