/* ak_inputs.h — deterministic test inputs for apex4 check (normal, heavy-tailed, adversarial), as
 * static functions included by kernels/ak_check.c (CUDA builds) and kernels/ak_nocuda.c (CPU-only
 * builds) so that ak_fill_input exists in both. Inputs only: no quantization math. */
#ifndef APEX4_AK_INPUTS_H
#define APEX4_AK_INPUTS_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "aq.h"
#include "ak.h"

static const char *const akin_names[] = {"normal", "heavy", "adversarial"};

static uint64_t akin_next(uint64_t *s) {   /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double akin_unif(uint64_t *s) { return ((double)(akin_next(s) >> 11) + 0.5) / 9007199254740992.0; }
static double akin_normal(uint64_t *s) {
    double u1 = akin_unif(s), u2 = akin_unif(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void akin_fill(ak_input k, unsigned seed, int rows, int K, uint16_t *x) {
    uint64_t s = 0x5EEDull * (uint64_t)(seed + 1) + (uint64_t)k * 0x1234567ull;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < K; c++) {
            double v;
            if (k == AK_INPUT_NORMAL) {
                v = akin_normal(&s);
            } else if (k == AK_INPUT_HEAVY) {
                v = akin_normal(&s) * exp(1.5 * akin_normal(&s));
                if (c % 17 == 5) v *= 50.0;
                if (v > 60000.0) v = 60000.0;
                if (v < -60000.0) v = -60000.0;
            } else {
                int blk = c / 32, pos = c % 32, pat = (r + blk) % 6;
                double sg = (akin_next(&s) & 1) ? -1.0 : 1.0;
                switch (pat) {
                case 0: v = pos == 0 ? 7.0 * sg : sg * (0.5 + (double)(akin_next(&s) % 7)); break;   /* ties */
                case 1: v = 0.0; break;                                                           /* zeros */
                case 2: v = sg * 1e-6 * (1.0 + (double)(akin_next(&s) % 16)); break;               /* subnormal s */
                case 3: v = sg * ldexp(1.0, -24); break;                                           /* s -> 0 */
                case 4: v = pos % 3 == 0 ? 65504.0 * sg : sg * 1000.0 * akin_unif(&s); break;      /* max */
                default: v = akin_normal(&s); break;
                }
            }
            x[(size_t)r * (size_t)K + (size_t)c] = aq_f32_to_f16((float)v);
        }
}

#endif
