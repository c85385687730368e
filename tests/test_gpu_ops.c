/* test_gpu_ops.c — the LLaMA forward building blocks on the GPU (kernels/ak_ops.h) against CPU
 * computations written here from the published formulas (HF transformers modeling_llama.py, eager
 * fp16 path; PyTorch's fp16 elementwise = fp32 op then one RNE rounding), the contract's CPU
 * reference for the KV-cache fake-quant (quant/aq.h aq_kv4_fakequant) and the CPU evaluator's scoring
 * (eval/ppl.h ae_score_row). Every test skips visibly ("skipped: no CUDA device") without a device.
 * fp16 "ground truth" here: a value computed in double, rounded to fp32 then to fp16 with
 * aq_f32_to_f16 (the project's RNE rounding, independent of the kernels). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ak.h"
#include "ak_ops.h"
#include "aq.h"
#include "forward.h"
#include "model.h"
#include "ppl.h"
#include "testutil.h"

#define NEED_DEVICE()                                                              \
    do {                                                                           \
        if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");        \
    } while (0)

/* ---- helpers ---------------------------------------------------------------------------------- */

static uint16_t h16(double v) { return aq_f32_to_f16((float)v); }
static float f16(uint16_t h) { return aq_f16_to_f32(h); }
/* fp16 product / sum of fp16 values: exact in double, one rounding (through fp32: innocuous, p = 24
 * >= 2·11 + 2). */
static uint16_t mul16(uint16_t a, uint16_t b) { return h16((double)f16(a) * (double)f16(b)); }
static uint16_t add16(uint16_t a, uint16_t b) { return h16((double)f16(a) + (double)f16(b)); }
/* distance in fp16 ulps (ordered bit patterns; +0 and -0 are 0 apart) */
static int ulps16(uint16_t a, uint16_t b) {
    int ia = (a & 0x8000) ? -(int)(a & 0x7fff) : (int)a;
    int ib = (b & 0x8000) ? -(int)(b & 0x7fff) : (int)b;
    return abs(ia - ib);
}

static double randn(uint64_t *s) {
    double u1 = tu_rand_unit(s), u2 = tu_rand_unit(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static void fill_normal16(uint16_t *x, size_t n, double scale, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = h16(scale * randn(&s));
}

static ak_ops *ctx_new(void) {
    ak_ops *o = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_new(0, &o, err), 0, "%s", err);
    return o;
}
static void *to_dev(ak_ops *o, const void *h, size_t bytes) {
    void *d = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_alloc(o, bytes, &d, "test tensor", err), 0, "%s", err);
    if (h) cr_assert_eq(ak_ops_upload(o, d, h, bytes, err), 0, "%s", err);
    return d;
}
static void from_dev(ak_ops *o, void *h, const void *d, size_t bytes) {
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_download(o, h, d, bytes, err), 0, "%s", err);
}

/* ---- context, memory, conversion --------------------------------------------------------------- */

Test(gpu_ops, context_and_memory_roundtrip) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    cr_assert_not_null(ak_ops_stream(o));
    cr_assert_not_null(ak_ops_cublas(o));
    uint16_t h[100], back[100];
    for (int i = 0; i < 100; i++) h[i] = (uint16_t)(i * 613);
    uint16_t *d = to_dev(o, h, sizeof h);
    from_dev(o, back, d, sizeof back);
    cr_assert_eq(memcmp(h, back, sizeof h), 0);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_zero(o, d, 50 * sizeof(uint16_t), err), 0, "%s", err);
    from_dev(o, back, d, sizeof back);
    for (int i = 0; i < 100; i++) cr_assert_eq(back[i], i < 50 ? 0 : h[i], "element %d", i);
    cr_assert_eq(ak_ops_sync(o, err), 0, "%s", err);
    void *p = NULL;
    cr_assert_neq(ak_ops_alloc(o, 0, &p, "empty", err), 0);
    cr_assert(strstr(err, "empty"), "%s", err);
    ak_ops_dfree(o, d);
    ak_ops_free(o);
}

/* Double-buffered pinned staging (the engine's weight uploads): 16 chunks of 4 MiB of a known pattern
 * (large enough that a missing wait would rewrite a half while its copy is in flight) copied through
 * two pinned halves with ak_ops_upload_async, each half rewritten only after
 * ak_ops_slot_wait on its slot: the device holds every chunk's pattern (checked against the
 * formula, not against the staging buffer); a bad slot is an error naming it. */
Test(gpu_ops, upload_async_double_buffered_staging_roundtrip) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    char err[AX_ERR_LEN] = "";
    enum { CH = 16, N = 1 << 20 };
    uint32_t *stage = NULL;
    cr_assert_eq(ak_ops_host_alloc(o, 2 * N * sizeof(uint32_t), (void **)&stage, "test staging", err), 0, "%s", err);
    uint32_t *d = NULL;
    cr_assert_eq(ak_ops_alloc(o, (size_t)CH * N * sizeof(uint32_t), (void **)&d, "test dst", err), 0, "%s", err);
    for (int c = 0; c < CH; c++) {
        const int slot = c & 1;
        uint32_t *buf = stage + (size_t)slot * N;
        cr_assert_eq(ak_ops_slot_wait(o, slot, err), 0, "%s", err);
        for (int i = 0; i < N; i++) buf[i] = (uint32_t)c * 2654435761u + (uint32_t)i;
        cr_assert_eq(ak_ops_upload_async(o, d + (size_t)c * N, buf, N * sizeof(uint32_t), slot, err), 0, "%s", err);
    }
    uint32_t *back = malloc((size_t)CH * N * sizeof(uint32_t));
    cr_assert_not_null(back);
    cr_assert_eq(ak_ops_download(o, back, d, (size_t)CH * N * sizeof(uint32_t), err), 0, "%s", err);
    for (int c = 0; c < CH; c++)
        for (int i = 0; i < N; i++)
            cr_assert_eq(back[(size_t)c * N + i], (uint32_t)c * 2654435761u + (uint32_t)i, "chunk %d element %d", c, i);
    cr_assert_neq(ak_ops_upload_async(o, d, stage, 4, 2, err), 0);
    cr_assert(strstr(err, "slot 2"), "%s", err);
    cr_assert_neq(ak_ops_slot_wait(o, -1, err), 0);
    cr_assert(strstr(err, "slot -1"), "%s", err);
    free(back);
    ak_ops_dfree(o, d);
    ak_ops_host_free(o, stage);
    ak_ops_free(o);
}

/* bf16 -> fp16 and fp32 -> fp16 equal aq_f32_to_f16 (of the exact bf16 widening) byte for byte,
 * including fp16 subnormals, exact ties and -0; a value that overflows fp16 is an error naming the
 * tensor and its flat index. */
Test(gpu_ops, to_f16_matches_aq_rounding_and_names_overflow) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { N = 4096 };
    uint16_t *bf = malloc(N * 2), *got = malloc(N * 2);
    float *f = malloc(N * 4);
    uint64_t s = 7;
    for (int i = 0; i < N; i++) {
        /* magnitudes 2^-30 .. 2^15 (fp16 subnormal range included), both signs */
        double v = ldexp(1.0 + tu_rand_unit(&s), (int)(tu_rand_unit(&s) * 45) - 30) * (i & 1 ? -1 : 1);
        f[i] = (float)v;
        uint32_t b;
        memcpy(&b, &f[i], 4);
        bf[i] = (uint16_t)(b >> 16);
    }
    f[0] = 1.0f + 0x1p-11f;       /* tie between 1 and 1 + 2^-10: even -> 1.0 (0x3c00) */
    f[1] = 1.0f + 3 * 0x1p-11f;   /* tie: even -> 1 + 2^-9 (0x3c02) */
    f[2] = -0.0f;
    f[3] = 65519.0f;              /* below 65504 + half ulp: 65504 */
    f[4] = 0x1p-25f;              /* half the smallest subnormal: tie to even -> 0 */
    f[5] = 0x1.8p-25f;            /* above the tie: smallest subnormal 0x0001 */
    char err[AX_ERR_LEN] = "";
    float *df = to_dev(o, f, N * 4);
    uint16_t *dbf = to_dev(o, bf, N * 2), *dout = to_dev(o, NULL, N * 2);
    cr_assert_eq(ak_ops_to_f16(o, AK_OPS_F32, df, N, dout, "w", err), 0, "%s", err);
    from_dev(o, got, dout, N * 2);
    cr_assert_eq(got[0], 0x3c00);
    cr_assert_eq(got[1], 0x3c02);
    cr_assert_eq(got[2], 0x8000);
    cr_assert_eq(got[3], 0x7bff);
    cr_assert_eq(got[4], 0x0000);
    cr_assert_eq(got[5], 0x0001);
    for (int i = 0; i < N; i++) cr_assert_eq(got[i], aq_f32_to_f16(f[i]), "f32 index %d: 0x%04x", i, got[i]);
    cr_assert_eq(ak_ops_to_f16(o, AK_OPS_BF16, dbf, N, dout, "w", err), 0, "%s", err);
    from_dev(o, got, dout, N * 2);
    for (int i = 0; i < N; i++)
        cr_assert_eq(got[i], aq_f32_to_f16(aq_bf16_to_f32(bf[i])), "bf16 index %d: 0x%04x", i, got[i]);
    /* overflow: 65520 rounds to inf */
    f[3] = 65520.0f;
    cr_assert_eq(ak_ops_upload(o, df, f, N * 4, err), 0, "%s", err);
    cr_assert_neq(ak_ops_to_f16(o, AK_OPS_F32, df, N, dout, "layers.0.mlp.up_proj.weight", err), 0);
    cr_assert(strstr(err, "layers.0.mlp.up_proj.weight") && strstr(err, "index 3"), "%s", err);
    bf[7] = 0x4789;   /* bf16 70144 */
    cr_assert_eq(ak_ops_upload(o, dbf, bf, N * 2, err), 0, "%s", err);
    cr_assert_neq(ak_ops_to_f16(o, AK_OPS_BF16, dbf, N, dout, "emb", err), 0);
    cr_assert(strstr(err, "index 7"), "%s", err);
    ak_ops_dfree(o, df); ak_ops_dfree(o, dbf); ak_ops_dfree(o, dout);
    ak_ops_free(o);
    free(bf); free(got); free(f);
}

/* ---- embeddings -------------------------------------------------------------------------------- */

Test(gpu_ops, embedding_gathers_rows_and_names_bad_token) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { V = 7, D = 5 };
    uint16_t table[V * D], x[4 * D];
    for (int v = 0; v < V; v++)
        for (int d = 0; d < D; d++) table[v * D + d] = h16(v * 100 + d);   /* integers: exact in fp16 */
    uint16_t *dt = to_dev(o, table, sizeof table), *dx = to_dev(o, NULL, sizeof x);
    int32_t tok[4] = {3, 0, 6, 3};
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_embed(o, tok, 4, dt, V, D, dx, err), 0, "%s", err);
    from_dev(o, x, dx, sizeof x);
    for (int t = 0; t < 4; t++)
        for (int d = 0; d < D; d++) cr_assert_eq(f16(x[t * D + d]), (float)(tok[t] * 100 + d), "[%d, %d]", t, d);
    int32_t bad[2] = {1, 7};
    cr_assert_neq(ak_ops_embed(o, bad, 2, dt, V, D, dx, err), 0);
    cr_assert(strstr(err, "token 7 at index 1"), "%s", err);
    ak_ops_dfree(o, dt); ak_ops_dfree(o, dx);
    ak_ops_free(o);
}

/* ---- RMSNorm ----------------------------------------------------------------------------------- */

/* HF LlamaRMSNorm: y = fp16(x · rsqrt(mean(x²) + eps)) in fp32, out = fp16(w · y). Expected values in
 * double (the GPU sums squares in fp32 in another order, so y can differ by 1 ulp, which w · y can turn
 * into 2 ulps across a binade: at most 2 ulps apart, at least 95% bit-equal). A zero
 * row gives exact zeros. add_rmsnorm: x + r is an exact fp16 sum (byte-equal) written back. */
Test(gpu_ops, rmsnorm_and_add_rmsnorm_match_hf_formula) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { T = 3, D = 1000 };
    const float eps = 1e-5f;
    uint16_t x[T * D], r[T * D], w[D], out[T * D], xs[T * D], xsum[T * D];
    fill_normal16(x, T * D, 1.5, 1);
    fill_normal16(r, T * D, 0.5, 2);
    fill_normal16(w, D, 0.1, 3);
    for (int i = 0; i < D; i++) w[i] = add16(w[i], h16(1.0));
    for (int i = 2 * D; i < 3 * D; i++) x[i] = r[i] = 0;   /* zero row */
    uint16_t *dx = to_dev(o, x, sizeof x), *dr = to_dev(o, r, sizeof r), *dw = to_dev(o, w, sizeof w);
    uint16_t *dout = to_dev(o, NULL, sizeof out);
    char err[AX_ERR_LEN] = "";
    for (int add = 0; add < 2; add++) {
        if (add) {
            cr_assert_eq(ak_ops_add_rmsnorm(o, dx, dr, dw, T, D, eps, dout, err), 0, "%s", err);
            from_dev(o, xsum, dx, sizeof xsum);
            for (int i = 0; i < T * D; i++) {
                xs[i] = add16(x[i], r[i]);
                cr_assert_eq(xsum[i], xs[i], "x + r at %d: 0x%04x vs 0x%04x", i, xsum[i], xs[i]);
            }
        } else {
            cr_assert_eq(ak_ops_rmsnorm(o, dx, dw, T, D, eps, dout, err), 0, "%s", err);
            memcpy(xs, x, sizeof xs);
        }
        from_dev(o, out, dout, sizeof out);
        long exact = 0;
        for (int t = 0; t < T; t++) {
            double ss = 0;
            for (int i = 0; i < D; i++) ss += (double)f16(xs[t * D + i]) * f16(xs[t * D + i]);
            double inv = 1.0 / sqrt(ss / D + (double)eps);
            for (int i = 0; i < D; i++) {
                uint16_t y = h16(f16(xs[t * D + i]) * inv);
                uint16_t e = mul16(w[i], y);
                int u = ulps16(out[t * D + i], e);
                cr_assert_leq(u, 2, "add %d row %d col %d: got 0x%04x want 0x%04x", add, t, i, out[t * D + i], e);
                exact += u == 0;
                if (t == 2) cr_assert_eq(out[t * D + i] & 0x7fff, 0, "zero row must stay 0");
            }
        }
        cr_assert_geq(exact, (long)(0.95 * T * D), "add %d: only %ld of %d bit-equal", add, exact, T * D);
    }
    cr_assert_neq(ak_ops_add_rmsnorm(o, dx, dr, dw, T, D, eps, dx, err), 0);
    cr_assert(strstr(err, "alias"), "%s", err);
    ak_ops_dfree(o, dx); ak_ops_dfree(o, dr); ak_ops_dfree(o, dw); ak_ops_dfree(o, dout);
    ak_ops_free(o);
}

/* ---- RoPE -------------------------------------------------------------------------------------- */

/* HF _compute_default_rope_parameters + _compute_llama3_parameters, written from the formulas in
 * double (not from eval/forward.c), rounded to fp32 as HF's inv_freq buffer is. */
static float hf_inv_freq(int i, int hd, double theta, int llama3, double factor, double lf, double hf, double old) {
    double inv = 1.0 / pow(theta, (double)(2 * i) / hd);
    if (llama3) {
        double wl = 2 * M_PI / inv, low_wl = old / lf, high_wl = old / hf;
        if (wl > low_wl) inv = inv / factor;
        else if (wl >= high_wl) {
            double sm = (old / wl - lf) / (hf - lf);
            inv = (1 - sm) * inv / factor + sm * inv;
        }
    }
    return (float)inv;
}

static void rope_case(ak_ops *o, int hd, double theta, int llama3, int nh, int nkv, int T, int pos0, uint64_t seed) {
    ak_ops_rope_cfg cfg = {hd, (float)theta, llama3, 8.0f, 1.0f, 4.0f, 8192};
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_rope_init(o, &cfg, 4096, err), 0, "%s", err);
    int half = hd / 2, q_ld = nh * hd + 8, k_ld = nkv * hd;   /* q with a padded row stride */
    size_t nq = (size_t)T * q_ld, nk = (size_t)T * k_ld;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *gq = malloc(nq * 2), *gk = malloc(nk * 2);
    fill_normal16(q, nq, 1.0, seed);
    fill_normal16(k, nk, 1.0, seed + 1);
    uint16_t *dq = to_dev(o, q, nq * 2), *dk = to_dev(o, k, nk * 2);
    cr_assert_eq(ak_ops_rope(o, dq, q_ld, nh, dk, k_ld, nkv, T, pos0, err), 0, "%s", err);
    from_dev(o, gq, dq, nq * 2);
    from_dev(o, gk, dk, nk * 2);
    long exact = 0, total = 0;
    for (int t = 0; t < T; t++)
        for (int hh = 0; hh < nh + nkv; hh++) {
            const uint16_t *x = hh < nh ? q + (size_t)t * q_ld + hh * hd : k + (size_t)t * k_ld + (hh - nh) * hd;
            const uint16_t *g = hh < nh ? gq + (size_t)t * q_ld + hh * hd : gk + (size_t)t * k_ld + (hh - nh) * hd;
            for (int i = 0; i < half; i++) {
                float inv = hf_inv_freq(i, hd, theta, llama3, 8.0, 1.0, 4.0, 8192.0);
                float a = (float)(pos0 + t) * inv;   /* HF: fp32 outer product */
                uint16_t c = h16(cos((double)a)), s = h16(sin((double)a));
                uint16_t x1 = x[i], x2 = x[i + half];
                uint16_t lo = add16(mul16(x1, c), mul16(x2 ^ 0x8000, s));   /* q·cos + (−x2)·sin */
                uint16_t hi = add16(mul16(x2, c), mul16(x1, s));            /* x2·cos + x1·sin */
                double mag = fabs(f16(x1)) + fabs(f16(x2));
                const uint16_t got[2] = {g[i], g[i + half]}, want[2] = {lo, hi};
                for (int e = 0; e < 2; e++) {
                    double d = fabs((double)f16(got[e]) - f16(want[e]));
                    /* fp32 angle (1 ulp of inv_freq, cosf vs cos) and fp16 table rounding: <= 2e-3 |x| */
                    double tol = 2e-3 * mag + fabs(f16(want[e])) * 0x1p-10;
                    cr_assert_leq(d, tol, "hd %d llama3 %d t %d head %d i %d: got %g want %g", hd, llama3, t, hh,
                                  i + e * half, f16(got[e]), f16(want[e]));
                    exact += got[e] == want[e];
                    total++;
                }
            }
        }
    /* an offline emulation of both inv_freq paths puts >= 90% of table entries bit-equal */
    cr_assert_geq(exact, 3 * total / 4, "only %ld of %ld bit-equal", exact, total);
    /* the padding columns of q are untouched */
    for (int t = 0; t < T; t++)
        for (int c = nh * hd; c < q_ld; c++) cr_assert_eq(gq[(size_t)t * q_ld + c], q[(size_t)t * q_ld + c]);
    ak_ops_dfree(o, dq); ak_ops_dfree(o, dk);
    free(q); free(k); free(gq); free(gk);
}

Test(gpu_ops, rope_matches_hf_formula_default_and_llama3) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    char err[AX_ERR_LEN] = "";
    uint16_t *d = to_dev(o, NULL, 64 * 2);
    cr_assert_neq(ak_ops_rope(o, d, 64, 1, NULL, 0, 0, 1, 0, err), 0);
    cr_assert(strstr(err, "ak_ops_rope_init"), "%s", err);
    rope_case(o, 128, 10000.0, 0, 4, 2, 17, 0, 11);
    rope_case(o, 128, 10000.0, 0, 2, 1, 3, 2000, 12);
    rope_case(o, 64, 500000.0, 1, 4, 2, 17, 0, 13);      /* Llama-3.2 style scaling */
    rope_case(o, 64, 500000.0, 1, 4, 2, 5, 4000, 14);    /* far positions: scaled frequencies matter */
    cr_assert_neq(ak_ops_rope(o, d, 64, 1, NULL, 0, 0, 2, 4095, err), 0);
    cr_assert(strstr(err, "4095..4096"), "%s", err);
    ak_ops_dfree(o, d);
    ak_ops_free(o);
}

/* ---- KV cache ---------------------------------------------------------------------------------- */

static void kv4_expect(const uint16_t *x, int n, uint16_t *out) {
    float *f = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) f[i] = f16(x[i]);
    aq_kv4_fakequant(f, n);
    for (int i = 0; i < n; i++) out[i] = aq_f32_to_f16(f[i]);
    free(f);
}

/* Byte-identical to aq_f32_to_f16(aq_kv4_fakequant(x)) for: normal and heavy vectors, n = 128, 64,
 * 96, 5; a constant vector (s = 0); min = ±0 in both orders; ties; a subnormal range (s underflows);
 * the full ±65504 range; NaN and inf rows (unchanged). */
Test(gpu_ops, kv4_fakequant_matches_aq_kv4_fakequant_bytes) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    static const int ns[] = {128, 64, 96, 5};
    enum { R = 12 };
    char err[AX_ERR_LEN] = "";
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        int n = ns[k];
        uint16_t *x = malloc((size_t)R * n * 2), *got = malloc((size_t)R * n * 2), *want = malloc((size_t)n * 2);
        fill_normal16(x, (size_t)R * n, 1.0, 100 + k);
        for (int i = 0; i < n; i++) {
            x[1 * n + i] = h16(f16(x[1 * n + i]) * 300.0);   /* heavy */
            x[2 * n + i] = h16(0.3);                         /* constant: s = 0 */
            x[3 * n + i] = h16(fabs(f16(x[3 * n + i])));     /* >= 0 with +0 first, then -0 */
            x[4 * n + i] = h16(fabs(f16(x[4 * n + i])));     /* >= 0 with -0 first, then +0 */
            x[5 * n + i] = h16((i % 16) * 0.5);              /* grid values: ties in x/s */
            x[6 * n + i] = (uint16_t)(i % 3);                /* subnormals 0, 2^-24, 2^-23: s underflows */
            x[7 * n + i] = h16(i % 2 ? 65504.0 : -65504.0 + i);
            x[10 * n + i] = h16(-(double)(i % 7) * 0.25);    /* <= 0: max is ±0 */
        }
        x[3 * n] = 0x0000; x[3 * n + n - 1] = 0x8000;
        x[4 * n] = 0x8000; x[4 * n + n - 1] = 0x0000;
        x[10 * n] = 0x8000; if (n > 1) x[10 * n + 1] = 0x0000;
        x[8 * n + n / 2] = 0x7e00;   /* NaN */
        x[9 * n] = 0xfc00;           /* -inf */
        x[7 * n] = 0xfbff;           /* -65504 */
        if (n > 1) x[7 * n + 1] = 0x7bff;
        uint16_t *dx = to_dev(o, x, (size_t)R * n * 2);
        cr_assert_eq(ak_ops_kv4_fakequant(o, dx, R, n, err), 0, "%s", err);
        from_dev(o, got, dx, (size_t)R * n * 2);
        for (int r = 0; r < R; r++) {
            kv4_expect(x + (size_t)r * n, n, want);
            for (int i = 0; i < n; i++)
                cr_assert_eq(got[(size_t)r * n + i], want[i], "n %d row %d col %d: in 0x%04x got 0x%04x want 0x%04x", n, r, i,
                             x[(size_t)r * n + i], got[(size_t)r * n + i], want[i]);
        }
        ak_ops_dfree(o, dx);
        free(x); free(got); free(want);
    }
    ak_ops_free(o);
}

/* kv_store writes rows pos0..pos0+T-1 of both caches from a fused qkv-like layout (row stride ld),
 * touches nothing else, applies kv4 per (token, head) vector, and refuses positions past max_seq. */
Test(gpu_ops, kv_store_appends_rows_and_applies_kv4) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { S = 10, NKV = 2, HD = 64, T = 3, P0 = 4, LD = 3 * NKV * HD, KVD = NKV * HD };
    uint16_t src[T * LD], kc[S * KVD], vc[S * KVD], want[HD];
    fill_normal16(src, T * LD, 2.0, 5);
    uint16_t sentinel[S * KVD];
    for (int i = 0; i < S * KVD; i++) sentinel[i] = 0x1234;
    uint16_t *dsrc = to_dev(o, src, sizeof src), *dk = to_dev(o, sentinel, sizeof kc), *dv = to_dev(o, sentinel, sizeof vc);
    char err[AX_ERR_LEN] = "";
    for (int kv4 = 0; kv4 < 2; kv4++) {
        cr_assert_eq(ak_ops_kv_store(o, dsrc + KVD, dsrc + 2 * KVD, LD, T, P0, NKV, HD, kv4, dk, dv, S, err), 0, "%s", err);
        from_dev(o, kc, dk, sizeof kc);
        from_dev(o, vc, dv, sizeof vc);
        for (int p = 0; p < S; p++)
            for (int h = 0; h < NKV; h++)
                for (int which = 0; which < 2; which++) {
                    const uint16_t *row = (which ? vc : kc) + (size_t)p * KVD + h * HD;
                    if (p < P0 || p >= P0 + T) {
                        for (int i = 0; i < HD; i++) cr_assert_eq(row[i], 0x1234, "row %d touched", p);
                        continue;
                    }
                    const uint16_t *in = src + (size_t)(p - P0) * LD + (1 + which) * KVD + h * HD;
                    if (kv4) kv4_expect(in, HD, want);
                    else memcpy(want, in, sizeof want);
                    for (int i = 0; i < HD; i++)
                        cr_assert_eq(row[i], want[i], "kv4 %d %s pos %d head %d col %d", kv4, which ? "v" : "k", p, h, i);
                }
    }
    cr_assert_neq(ak_ops_kv_store(o, dsrc, dsrc, LD, T, 8, NKV, HD, 0, dk, dv, S, err), 0);
    cr_assert(strstr(err, "max_seq 10"), "%s", err);
    ak_ops_dfree(o, dsrc); ak_ops_dfree(o, dk); ak_ops_dfree(o, dv);
    ak_ops_free(o);
}

/* ---- attention --------------------------------------------------------------------------------- */

/* Naive causal GQA softmax attention in double (HF eager attention with repeat_kv, exact arithmetic). */
static void attn_ref(const uint16_t *q, int q_ld, const uint16_t *kc, const uint16_t *vc, int T, int pos0, int nh,
                     int nkv, int hd, double *out) {
    int grp = nh / nkv, L = pos0 + T;
    double *s = malloc((size_t)L * sizeof(double));
    double scale = 1.0 / sqrt((double)hd);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) {
            int kvh = h / grp, n = pos0 + t + 1;
            const uint16_t *qr = q + (size_t)t * q_ld + h * hd;
            double m = -INFINITY;
            for (int j = 0; j < n; j++) {
                const uint16_t *kr = kc + ((size_t)j * nkv + kvh) * hd;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)f16(qr[i]) * f16(kr[i]);
                s[j] = d * scale;
                if (s[j] > m) m = s[j];
            }
            double sum = 0;
            for (int j = 0; j < n; j++) { s[j] = exp(s[j] - m); sum += s[j]; }
            double *orow = out + (size_t)t * nh * hd + h * hd;
            for (int i = 0; i < hd; i++) orow[i] = 0;
            for (int j = 0; j < n; j++) {
                const uint16_t *vr = vc + ((size_t)j * nkv + kvh) * hd;
                for (int i = 0; i < hd; i++) orow[i] += s[j] / sum * f16(vr[i]);
            }
        }
    free(s);
}

typedef struct { int T, pos0, nh, nkv, hd; double qscale; } attn_case;

/* SIMPLE (fp32 throughout): |err| <= 5e-4·|ref| + 2e-5 (the fp16 output rounding, u = 2^-11, and
 * fp32 sums). TC (P rounded to fp16 for P·V, as FlashAttention-2): <= 5e-4·|ref| + 2e-3
 * (2^-11 · Σ p·|v| with |v| <= ~4). AUTO = TC where it applies, else SIMPLE. The output buffer
 * starts as NaN, so a row the kernel forgets fails. */
Test(gpu_ops, attention_simple_and_tc_match_double_reference) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    static const attn_case cases[] = {
        {37, 0, 4, 2, 64, 1.0},  {70, 0, 2, 1, 128, 1.0}, {5, 130, 4, 4, 128, 1.0}, {1, 200, 4, 2, 64, 1.0},
        {65, 3, 2, 2, 96, 1.0},  {33, 0, 2, 1, 32, 1.0},  {130, 0, 2, 1, 128, 4.0}, {20, 10, 2, 1, 48, 1.0},
        {9, 0, 2, 2, 256, 1.0},  {64, 64, 2, 1, 64, 2.0},
    };
    char err[AX_ERR_LEN] = "";
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const attn_case *a = &cases[c];
        int S = a->pos0 + a->T + 3, q_ld = a->nh * a->hd, kvd = a->nkv * a->hd;
        size_t nq = (size_t)a->T * q_ld, nkc = (size_t)S * kvd;
        uint16_t *q = malloc(nq * 2), *kc = malloc(nkc * 2), *vc = malloc(nkc * 2), *got = malloc(nq * 2), *nan = malloc(nq * 2);
        double *ref = malloc(nq * sizeof(double));
        fill_normal16(q, nq, a->qscale, 1000 + c);
        fill_normal16(kc, nkc, 1.0, 2000 + c);
        fill_normal16(vc, nkc, 1.0, 3000 + c);
        for (size_t i = 0; i < nq; i++) nan[i] = 0x7e00;
        attn_ref(q, q_ld, kc, vc, a->T, a->pos0, a->nh, a->nkv, a->hd, ref);
        uint16_t *dq = to_dev(o, q, nq * 2), *dk = to_dev(o, kc, nkc * 2), *dv = to_dev(o, vc, nkc * 2);
        uint16_t *dout = to_dev(o, nan, nq * 2);
        int tc_ok = ak_ops_attention_tc_ok(a->hd, q_ld, dq, dk, dv, dout);
        cr_assert_eq(tc_ok, a->hd == 32 || a->hd == 64 || a->hd == 96 || a->hd == 128);
        for (int impl = 0; impl < 5; impl++) {
            int rc = ak_ops_attention(o, (ak_attn_impl)impl, dq, q_ld, dk, dv, S, a->T, a->pos0, a->nh, a->nkv, a->hd, dout, err);
            if (impl >= AK_ATTN_TC && !tc_ok) {
                cr_assert_neq(rc, 0, "case %zu: TC must refuse head_dim %d", c, a->hd);
                cr_assert(strstr(err, "head_dim"), "%s", err);
                continue;
            }
            cr_assert_eq(rc, 0, "case %zu impl %d: %s", c, impl, err);
            from_dev(o, got, dout, nq * 2);
            int tc = impl >= AK_ATTN_TC || (impl == AK_ATTN_AUTO && tc_ok);
            double worst = 0;
            for (size_t i = 0; i < nq; i++) {
                double g = f16(got[i]), d = fabs(g - ref[i]);
                double tol = 5e-4 * fabs(ref[i]) + (tc ? 2e-3 : 2e-5);
                if (d / tol > worst) worst = d / tol;
                cr_assert_leq(d, tol, "case %zu (T %d pos0 %d hd %d) impl %d: element %zu (t %zu) got %g want %g", c, a->T,
                              a->pos0, a->hd, impl, i, i / (size_t)q_ld, g, ref[i]);
            }
            cr_log_info("attention case %zu (T %d pos0 %d heads %d/%d hd %d) impl %d (%s): max |err|/tol = %.3f", c, a->T,
                        a->pos0, a->nh, a->nkv, a->hd, impl, tc ? "tc" : "simple", worst);
            cr_assert_eq(ak_ops_upload(o, dout, nan, nq * 2, err), 0, "%s", err);
        }
        ak_ops_dfree(o, dq); ak_ops_dfree(o, dk); ak_ops_dfree(o, dv); ak_ops_dfree(o, dout);
        free(q); free(kc); free(vc); free(got); free(nan); free(ref);
    }
    ak_ops_free(o);
}

Test(gpu_ops, attention_rejects_bad_shapes) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    uint16_t *d = to_dev(o, NULL, 4096);
    char err[AX_ERR_LEN] = "";
    cr_assert_neq(ak_ops_attention(o, AK_ATTN_AUTO, d, 192, d, d, 8, 2, 0, 3, 2, 64, d, err), 0);
    cr_assert(strstr(err, "not a multiple of n_kv"), "%s", err);
    cr_assert_neq(ak_ops_attention(o, AK_ATTN_AUTO, d, 64, d, d, 8, 4, 5, 1, 1, 64, d, err), 0);
    cr_assert(strstr(err, "max_seq 8"), "%s", err);
    cr_assert_neq(ak_ops_attention(o, AK_ATTN_AUTO, d, 32, d, d, 8, 1, 0, 1, 1, 64, d, err), 0);
    cr_assert(strstr(err, "row stride"), "%s", err);
    cr_assert_neq(ak_ops_attention(o, AK_ATTN_SIMPLE, d, 300, d, d, 8, 1, 0, 1, 1, 300, d, err), 0);
    cr_assert(strstr(err, "head_dim 300"), "%s", err);
    ak_ops_dfree(o, d);
    ak_ops_free(o);
}

/* LLaMA-3-8B attention shape (32 heads over 8 KV heads, head_dim 128), 1500 new queries after a
 * 548-position cache (2048 keys, tiles not aligned to the cache): the tensor-core kernel agrees with
 * the simple fp32 kernel to the TC tolerance above; then the LLaMA-2-7B prefill (T = 2048, 32 x 128)
 * is timed for the report. */
Test(gpu_ops, attention_tc_agrees_with_simple_at_llama_shape_and_timing, .timeout = 120) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { T = 1500, P0 = 548, NH = 32, NKV = 8, HD = 128, S = 2048 };
    size_t nq = (size_t)T * NH * HD, nkc = (size_t)S * NKV * HD;
    uint16_t *q = malloc(nq * 2), *kc = malloc(nkc * 2), *vc = malloc(nkc * 2), *a = malloc(nq * 2), *b = malloc(nq * 2);
    uint64_t s = 99;
    for (size_t i = 0; i < nq; i++) q[i] = h16(tu_rand_unit(&s) * 4 - 2);
    for (size_t i = 0; i < nkc; i++) { kc[i] = h16(tu_rand_unit(&s) * 4 - 2); vc[i] = h16(tu_rand_unit(&s) * 4 - 2); }
    uint16_t *dq = to_dev(o, q, nq * 2), *dk = to_dev(o, kc, nkc * 2), *dv = to_dev(o, vc, nkc * 2);
    uint16_t *dout = to_dev(o, NULL, nq * 2);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_attention(o, AK_ATTN_TC, dq, NH * HD, dk, dv, S, T, P0, NH, NKV, HD, dout, err), 0, "%s", err);
    from_dev(o, a, dout, nq * 2);
    cr_assert_eq(ak_ops_attention(o, AK_ATTN_SIMPLE, dq, NH * HD, dk, dv, S, T, P0, NH, NKV, HD, dout, err), 0, "%s", err);
    from_dev(o, b, dout, nq * 2);
    double worst = 0, sum = 0;
    for (size_t i = 0; i < nq; i++) {
        double d = fabs((double)f16(a[i]) - f16(b[i]));
        cr_assert_leq(d, 5e-4 * fabs(f16(b[i])) + 2e-3, "element %zu: tc %g simple %g", i, f16(a[i]), f16(b[i]));
        if (d > worst) worst = d;
        sum += d;
    }
    /* the 64- and 128-row variants agree with each other to the same tolerance */
    cr_assert_eq(ak_ops_attention(o, AK_ATTN_TC64, dq, NH * HD, dk, dv, S, T, P0, NH, NKV, HD, dout, err), 0, "%s", err);
    from_dev(o, a, dout, nq * 2);
    for (size_t i = 0; i < nq; i++)
        cr_assert_leq(fabs((double)f16(a[i]) - f16(b[i])), 5e-4 * fabs(f16(b[i])) + 2e-3, "TC64 element %zu", i);
    cr_assert_eq(ak_ops_attention(o, AK_ATTN_TC128, dq, NH * HD, dk, dv, S, T, P0, NH, NKV, HD, dout, err), 0, "%s", err);
    from_dev(o, a, dout, nq * 2);
    for (size_t i = 0; i < nq; i++)
        cr_assert_leq(fabs((double)f16(a[i]) - f16(b[i])), 5e-4 * fabs(f16(b[i])) + 2e-3, "TC128 element %zu", i);
    double ms_tc = 0, ms_simple = 0, ms64 = 0, ms128 = 0;
    cr_assert_eq(ak_ops_bench_attention(o, AK_ATTN_TC, 2048, 32, 32, 128, 3, 10, &ms_tc, err), 0, "%s", err);
    cr_assert_eq(ak_ops_bench_attention(o, AK_ATTN_TC64, 2048, 32, 32, 128, 3, 10, &ms64, err), 0, "%s", err);
    cr_assert_eq(ak_ops_bench_attention(o, AK_ATTN_TC128, 2048, 32, 32, 128, 3, 10, &ms128, err), 0, "%s", err);
    cr_assert_eq(ak_ops_bench_attention(o, AK_ATTN_SIMPLE, 2048, 32, 32, 128, 1, 3, &ms_simple, err), 0, "%s", err);
    double flops = 4.0 * 2048.0 * 2049.0 / 2.0 * 128.0 * 32.0;   /* QKᵀ and PV over the causal half */
    fprintf(stderr, "attention TC vs simple (T %d after %d, 32x128, 8 kv): max |diff| %.3g, mean %.3g\n"
                    "attention LLaMA-2-7B prefill T=2048 32x128: TC %.3f ms (%.1f TFLOPS), simple %.3f ms\n",
            T, P0, worst, sum / (double)nq, ms_tc, flops / ms_tc * 1e-9, ms_simple);
    fprintf(stderr, "attention LLaMA-2-7B prefill: TC64 %.3f ms (%.1f TFLOPS), TC128 %.3f ms (%.1f TFLOPS)\n", ms64,
            flops / ms64 * 1e-9, ms128, flops / ms128 * 1e-9);
    cr_assert_gt(ms_tc, 0.0);
    ak_ops_dfree(o, dq); ak_ops_dfree(o, dk); ak_ops_dfree(o, dv); ak_ops_dfree(o, dout);
    free(q); free(kc); free(vc); free(a); free(b);
    ak_ops_free(o);
}

/* ---- SwiGLU and residual ----------------------------------------------------------------------- */

/* out = fp16(silu(g)) · u with silu = g / (1 + e^-g) (F.silu), from a fused gate|up buffer (row
 * stride 2·hidden). Expected in double; the GPU's fp32 expf and division differ by a few fp32 ulps,
 * so fp16(silu) can differ by 1 ulp (2 after the multiply by u), at least 99% bit-equal.
 * silu(-100) = -3.7e-42 rounds to -0. */
Test(gpu_ops, swiglu_matches_silu_formula) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { T = 3, H = 700, LD = 2 * H };
    uint16_t in[T * LD], out[T * H];
    fill_normal16(in, T * LD, 3.0, 21);
    in[0] = h16(-100.0);
    in[1] = h16(-20.0);
    in[2] = h16(60000.0);
    uint16_t *din = to_dev(o, in, sizeof in), *dout = to_dev(o, NULL, sizeof out);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_swiglu(o, din, din + H, LD, T, H, dout, err), 0, "%s", err);
    from_dev(o, out, dout, sizeof out);
    long exact = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < H; i++) {
            double g = f16(in[t * LD + i]);
            uint16_t sl = h16(g / (1.0 + exp(-g)));
            uint16_t e = mul16(sl, in[t * LD + H + i]);
            int u = ulps16(out[t * H + i], e);
            cr_assert_leq(u, 2, "[%d, %d] g %g: got 0x%04x want 0x%04x", t, i, g, out[t * H + i], e);
            exact += u == 0;
        }
    cr_assert_eq(out[0], mul16(0x8000, in[H]), "silu(-100) -> -0 times up");
    cr_assert_geq(exact, (long)(0.99 * T * H), "only %ld bit-equal", exact);
    ak_ops_dfree(o, din); ak_ops_dfree(o, dout);
    ak_ops_free(o);
}

/* x += y is the correctly rounded fp16 sum (exact in double, rounded once): ties to even, overflow to
 * inf, -0 + -0 = -0. */
Test(gpu_ops, residual_add_is_rne_fp16_sum) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { N = 3000 };
    uint16_t x[N], y[N], got[N];
    fill_normal16(x, N, 10.0, 31);
    fill_normal16(y, N, 0.01, 32);
    x[0] = h16(1.0); y[0] = h16(0x1p-11);          /* tie: 1.0 */
    x[1] = h16(65504.0); y[1] = h16(65504.0);      /* inf */
    x[2] = 0x8000; y[2] = 0x8000;                  /* -0 */
    uint16_t *dx = to_dev(o, x, sizeof x), *dy = to_dev(o, y, sizeof y);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_add(o, dx, dy, N, err), 0, "%s", err);
    from_dev(o, got, dx, sizeof got);
    cr_assert_eq(got[0], 0x3c00);
    cr_assert_eq(got[1], 0x7c00);
    cr_assert_eq(got[2], 0x8000);
    for (int i = 0; i < N; i++) cr_assert_eq(got[i], add16(x[i], y[i]), "index %d", i);
    ak_ops_dfree(o, dx); ak_ops_dfree(o, dy);
    ak_ops_free(o);
}

/* ---- linears ----------------------------------------------------------------------------------- */

/* y = x·Wᵀ against double dot products: fp16 out within fp16 rounding (+ fp32 accumulation, bounded
 * by 1e-5·Σ|x·w|); fp32 out within 1e-5·Σ|x·w|. K = 200 and N = 37 are not tile multiples. */
Test(gpu_ops, linear_and_lm_head_match_cpu_dot_products) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { T = 5, K = 200, N = 37 };
    uint16_t x[T * K], w[N * K], y[T * N];
    float yf[T * N];
    fill_normal16(x, T * K, 1.0, 41);
    fill_normal16(w, N * K, 0.05, 42);
    uint16_t *dx = to_dev(o, x, sizeof x), *dw = to_dev(o, w, sizeof w), *dy = to_dev(o, NULL, sizeof y);
    float *dyf = to_dev(o, NULL, sizeof yf);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_linear(o, dx, T, K, dw, N, dy, err), 0, "%s", err);
    cr_assert_eq(ak_ops_linear_f32(o, dx, T, K, dw, N, dyf, err), 0, "%s", err);
    from_dev(o, y, dy, sizeof y);
    from_dev(o, yf, dyf, sizeof yf);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double d = 0, a = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)f16(x[t * K + k]) * f16(w[n * K + k]);
                d += p;
                a += fabs(p);
            }
            cr_assert_leq(fabs(yf[t * N + n] - d), 1e-5 * a, "f32 [%d, %d]: %g vs %g", t, n, yf[t * N + n], d);
            cr_assert_leq(fabs(f16(y[t * N + n]) - d), 0x1p-11 * fabs(d) + 1e-5 * a, "f16 [%d, %d]: %g vs %g", t, n,
                          f16(y[t * N + n]), d);
        }
    cr_assert_neq(ak_ops_linear(o, dx, 0, K, dw, N, dy, err), 0);
    ak_ops_dfree(o, dx); ak_ops_dfree(o, dw); ak_ops_dfree(o, dy); ak_ops_dfree(o, dyf);
    ak_ops_free(o);
}

/* ---- perplexity reductions ----------------------------------------------------------------------- */

/* Against (1) log-softmax / KL / argmax written here in double and (2) the CPU evaluator
 * (ae_logsumexp, ae_score_row fed as eval/ppl.c feeds it). The GPU uses the evaluator's exp per
 * element, so (2) agrees to ~1e-12 and (1) to fp32 precision (a CPU emulation of these rows gives
 * |evaluator − exact| <= 5e-9 on the small-KLD rows, 30x inside the tolerance). Row 2 has a tied maximum (lowest id
 * wins); identical logits give KLD exactly 0; rows padded to a stride of V + 3. */
Test(gpu_ops, score_matches_cpu_evaluator_and_double_formulas) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    enum { T = 6, V = 1000, LD = V + 3 };
    float *lg = calloc((size_t)T * LD, 4), *rf = calloc((size_t)T * LD, 4), *lp = calloc((size_t)T * LD, 4);
    float *p = malloc(V * 4);
    int32_t tgt[T], am[T], same[T], ram[T];
    double nll[T], kld[T], nll2[T], kld2[T];
    uint64_t s = 51;
    for (int t = 0; t < T; t++) {
        for (int v = 0; v < V; v++) {
            lg[t * LD + v] = (float)(3.0 * randn(&s));
            rf[t * LD + v] = lg[t * LD + v] + (float)(0.1 * randn(&s));
        }
        tgt[t] = (int32_t)(tu_rand_u64(&s) % V);
    }
    lg[2 * LD + 500] = 20.0f; lg[2 * LD + 10] = 20.0f;   /* tie: argmax 10 */
    rf[2 * LD + 10] = 19.0f; rf[2 * LD + 11] = 19.5f;    /* ref argmax 11: not the same */
    memcpy(rf + 4 * LD, lg + 4 * LD, V * 4);             /* row 4: identical -> KLD 0 */
    float *dl = to_dev(o, lg, (size_t)T * LD * 4), *dr = to_dev(o, rf, (size_t)T * LD * 4);
    float *dlp = to_dev(o, NULL, (size_t)T * LD * 4);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_score(o, dl, LD, T, V, tgt, dr, LD, AK_OPS_REF_LOGITS, nll, am, kld, same, err), 0, "%s", err);
    cr_assert_eq(ak_ops_logprobs(o, dr, LD, T, V, dlp, LD, ram, err), 0, "%s", err);
    cr_assert_eq(ak_ops_score(o, dl, LD, T, V, tgt, dlp, LD, AK_OPS_REF_LOGP, nll2, NULL, kld2, NULL, err), 0, "%s", err);
    from_dev(o, lp, dlp, (size_t)T * LD * 4);
    for (int t = 0; t < T; t++) {
        const float *l = lg + t * LD, *a = rf + t * LD;
        /* (1) double formulas */
        double ml = -INFINITY, ma = -INFINITY, sl = 0, sa = 0;
        int bl = 0, ba = 0;
        for (int v = 0; v < V; v++) {
            if (l[v] > ml) { ml = l[v]; bl = v; }
            if (a[v] > ma) { ma = a[v]; ba = v; }
        }
        for (int v = 0; v < V; v++) { sl += exp(l[v] - ml); sa += exp(a[v] - ma); }
        double lse_l = ml + log(sl), lse_a = ma + log(sa), kl = 0;
        for (int v = 0; v < V; v++) kl += exp(a[v] - lse_a) * ((a[v] - lse_a) - (l[v] - lse_l));
        cr_assert_eq(am[t], bl, "row %d argmax", t);
        cr_assert_eq(ram[t], ba, "row %d ref argmax", t);
        cr_assert_eq(same[t], bl == ba, "row %d top-1", t);
        cr_assert_leq(fabs(nll[t] - (lse_l - l[tgt[t]])), 1e-6 * fabs(lse_l - l[tgt[t]]), "row %d nll %.12g", t, nll[t]);
        cr_assert_leq(fabs(kld[t] - kl), 1e-7 + 1e-5 * kl, "row %d kld %.12g vs %.12g", t, kld[t], kl);
        /* the log-prob path differs by Σ p·ε (fp32 rounding of the stored log-probs): ~1e-7 here */
        cr_assert_leq(fabs(kld2[t] - kl), 5e-7 + 1e-5 * kl, "row %d logp kld %.12g vs %.12g", t, kld2[t], kl);
        cr_assert_eq(nll2[t], nll[t], "row %d: nll must not depend on the reference kind", t);
        /* (2) the CPU evaluator */
        double rlse = ae_logsumexp(a, V), psum = 0;
        for (int v = 0; v < V; v++) {   /* logp = (float)(a - lse): equal up to 1 fp32 ulp (lse sum order) */
            float e = (float)((double)a[v] - rlse);
            cr_assert_leq(fabsf(lp[t * LD + v] - e), 1.2e-7f * fabsf(e), "row %d logp %d: %.9g vs %.9g", t, v, lp[t * LD + v], e);
        }
        for (int v = 0; v < V; v++) p[v] = (float)((double)a[v] - rlse);
        ae_exp_shifted(p, 0.0f, p, V);
        for (int v = 0; v < V; v++) psum += (double)p[v];
        double enll, ekld;
        int esame;
        ae_score_row(a, rlse, psum, p, ba, l, V, tgt[t], &enll, &ekld, &esame);
        cr_assert_leq(fabs(nll[t] - enll), 1e-12 * fabs(enll), "row %d nll %.15g vs evaluator %.15g", t, nll[t], enll);
        cr_assert_leq(fabs(kld[t] - ekld), 1e-12 + 1e-9 * fabs(ekld), "row %d kld %.15g vs evaluator %.15g", t, kld[t], ekld);
        cr_assert_eq(same[t], esame);
    }
    cr_assert_eq(am[2], 10);
    cr_assert_eq(same[2], 0);
    cr_assert_eq(kld[4], 0.0, "identical logits: KLD %g", kld[4]);
    /* errors: a target outside the vocabulary, a NaN logit */
    tgt[3] = V;
    cr_assert_neq(ak_ops_score(o, dl, LD, T, V, tgt, NULL, 0, AK_OPS_REF_LOGITS, nll, NULL, NULL, NULL, err), 0);
    cr_assert(strstr(err, "index 3"), "%s", err);
    tgt[3] = 0;
    lg[5 * LD + 17] = NAN;
    cr_assert_eq(ak_ops_upload(o, dl, lg, (size_t)T * LD * 4, err), 0, "%s", err);
    cr_assert_neq(ak_ops_score(o, dl, LD, T, V, tgt, NULL, 0, AK_OPS_REF_LOGITS, nll, NULL, NULL, NULL, err), 0);
    cr_assert(strstr(err, "non-finite logits in row 5"), "%s", err);
    ak_ops_dfree(o, dl); ak_ops_dfree(o, dr); ak_ops_dfree(o, dlp);
    free(lg); free(rf); free(lp); free(p);
    ak_ops_free(o);
}

/* ---- packed sequences (zero-shot requests side by side in one forward) ---------------------------- */

/* Packed attention: each sequence against the double reference of THAT sequence alone (its own rows of
 * q and of the cache, positions from 0) — an independent check of the block-diagonal causal mask:
 * a key leaking across sequences or a missing one moves the output far past the tolerance of the
 * single-sequence test above. Lengths straddle the 64-row tiles (1, 63, 64, 65, ...). */
Test(gpu_ops, attention_packed_equals_each_sequence_alone) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    static const int lens[] = {37, 64, 1, 100, 5, 65, 63};
    const int ns = (int)(sizeof lens / sizeof *lens);
    static const int hds[] = {64, 128};
    char err[AX_ERR_LEN] = "";
    for (int hi = 0; hi < 2; hi++) {
        const int nh = 4, nkv = 2, hd = hds[hi], q_ld = nh * hd, kvd = nkv * hd;
        int T = 0;
        for (int i = 0; i < ns; i++) T += lens[i];
        size_t nq = (size_t)T * q_ld, nk = (size_t)T * kvd;
        uint16_t *q = malloc(nq * 2), *kc = malloc(nk * 2), *vc = malloc(nk * 2), *got = malloc(nq * 2);
        int32_t *seg = malloc((size_t)T * 4);
        double *ref = malloc(nq * sizeof(double));
        fill_normal16(q, nq, 1.0, 71 + hi);
        fill_normal16(kc, nk, 1.0, 72 + hi);
        fill_normal16(vc, nk, 1.0, 73 + hi);
        for (int i = 0, b = 0; i < ns; b += lens[i], i++) {
            for (int t = 0; t < lens[i]; t++) seg[b + t] = b;
            attn_ref(q + (size_t)b * q_ld, q_ld, kc + (size_t)b * kvd, vc + (size_t)b * kvd, lens[i], 0, nh, nkv, hd,
                     ref + (size_t)b * q_ld);
        }
        uint16_t *dq = to_dev(o, q, nq * 2), *dk = to_dev(o, kc, nk * 2), *dv = to_dev(o, vc, nk * 2);
        uint16_t *dout = to_dev(o, NULL, nq * 2);
        int32_t *dseg = to_dev(o, seg, (size_t)T * 4);
        for (int impl = 1; impl <= 4; impl++) {   /* simple, TC, TC64, TC128 */
            cr_assert_eq(ak_ops_attention_packed(o, (ak_attn_impl)impl, dq, q_ld, dk, dv, T, T, dseg, nh, nkv, hd, dout,
                                                 err), 0, "%s", err);
            from_dev(o, got, dout, nq * 2);
            for (size_t i = 0; i < nq; i++) {
                double g = f16(got[i]), tol = 5e-4 * fabs(ref[i]) + (impl >= AK_ATTN_TC ? 2e-3 : 2e-5);
                cr_assert_leq(fabs(g - ref[i]), tol, "hd %d impl %d: row %zu got %g want %g", hd, impl, i / (size_t)q_ld,
                              g, ref[i]);
            }
        }
        cr_assert_neq(ak_ops_attention_packed(o, AK_ATTN_AUTO, dq, q_ld, dk, dv, T, T, NULL, nh, nkv, hd, dout, err), 0);
        ak_ops_dfree(o, dq); ak_ops_dfree(o, dk); ak_ops_dfree(o, dv); ak_ops_dfree(o, dout); ak_ops_dfree(o, dseg);
        free(q); free(kc); free(vc); free(got); free(seg); free(ref);
    }
    ak_ops_free(o);
}

/* Packed RoPE: row t at position t - seg[t] gives the same bytes as ak_ops_rope of that sequence alone
 * (positions 0..len-1: the same table entries and operations); gather_rows copies rows exactly. */
Test(gpu_ops, rope_packed_and_gather_rows) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    char err[AX_ERR_LEN] = "";
    const int hd = 64, nh = 2, nkv = 1, ld = (nh + nkv) * hd, lens[3] = {5, 17, 9}, T = 31;
    ak_ops_rope_cfg rc = {hd, 10000.0f, 0, 0, 0, 0, 0};
    cr_assert_eq(ak_ops_rope_init(o, &rc, 64, err), 0, "%s", err);
    size_t n = (size_t)T * ld;
    uint16_t *x = malloc(n * 2), *a = malloc(n * 2), *b = malloc(n * 2);
    int32_t seg[31];
    fill_normal16(x, n, 1.0, 99);
    for (int i = 0, s0 = 0; i < 3; s0 += lens[i], i++)
        for (int t = 0; t < lens[i]; t++) seg[s0 + t] = s0;
    uint16_t *dx = to_dev(o, x, n * 2);
    int32_t *dseg = to_dev(o, seg, sizeof seg);
    cr_assert_eq(ak_ops_rope_packed(o, dx, ld, nh, dx + nh * hd, ld, nkv, T, dseg, err), 0, "%s", err);
    from_dev(o, a, dx, n * 2);
    for (int i = 0, s0 = 0; i < 3; s0 += lens[i], i++) {
        uint16_t *dy = to_dev(o, x + (size_t)s0 * ld, (size_t)lens[i] * ld * 2);
        cr_assert_eq(ak_ops_rope(o, dy, ld, nh, dy + nh * hd, ld, nkv, lens[i], 0, err), 0, "%s", err);
        from_dev(o, b + (size_t)s0 * ld, dy, (size_t)lens[i] * ld * 2);
        ak_ops_dfree(o, dy);
    }
    cr_assert_eq(memcmp(a, b, n * 2), 0, "packed RoPE differs from per-sequence RoPE");
    int32_t rows[4] = {30, 0, 7, 7};
    int32_t *drows = to_dev(o, rows, sizeof rows);
    uint16_t *dg = to_dev(o, NULL, (size_t)4 * ld * 2);
    cr_assert_eq(ak_ops_gather_rows(o, dx, ld, drows, 4, ld, dg, err), 0, "%s", err);
    uint16_t *g = malloc((size_t)4 * ld * 2);
    from_dev(o, g, dg, (size_t)4 * ld * 2);
    for (int r = 0; r < 4; r++) cr_assert_eq(memcmp(g + (size_t)r * ld, a + (size_t)rows[r] * ld, (size_t)ld * 2), 0);
    ak_ops_dfree(o, dx); ak_ops_dfree(o, dseg); ak_ops_dfree(o, drows); ak_ops_dfree(o, dg);
    free(x); free(a); free(b); free(g);
    ak_ops_free(o);
}

/* The device generator of virtual checkpoints against make-model's CPU stream (eval/model.h
 * ae_gen_normal, then fp16 RNE as make-model writes F16): every value of 2^20 samples from an odd
 * offset (a pair split at both ends) equal. A different ulp of CUDA's double log/cos could flip an
 * fp16 rounding with probability ~2^-29 per value: none is expected at this size. */
Test(gpu_ops, gen_normal_matches_make_model_stream) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    char err[AX_ERR_LEN] = "";
    const size_t n = (size_t)1 << 20, first = 12345;
    const uint64_t seed = ae_gen_tensor_seed(1, "model.layers.3.mlp.down_proj.weight");
    float *cpu = malloc(n * sizeof *cpu);
    uint16_t *got = malloc(n * 2);
    ae_gen_normal(seed, 0.02, first, n, cpu);
    uint16_t *d = to_dev(o, NULL, n * 2);
    cr_assert_eq(ak_ops_gen_normal_f16(o, seed, 0.02, first, n, d, err), 0, "%s", err);
    from_dev(o, got, d, n * 2);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != aq_f32_to_f16(cpu[i]);
    cr_assert_eq(bad, 0, "%zu of %zu values differ from the CPU stream", bad, n);
    cr_assert_eq(ak_ops_fill_f16(o, 0x3c00, 7, d, err), 0, "%s", err);
    from_dev(o, got, d, 14);
    for (int i = 0; i < 7; i++) cr_assert_eq(got[i], 0x3c00);
    ak_ops_dfree(o, d);
    free(cpu); free(got);
    ak_ops_free(o);
}

/* Prefill from the q|k|v output (no cache copy) against kv_store + attention from the cache: the same
 * kernels over the same keys in the same order, so the same bytes (both impls; plain and packed). */
Test(gpu_ops, attention_prefill_equals_cache_route) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    char err[AX_ERR_LEN] = "";
    const int T = 150, nh = 4, nkv = 2, hd = 64, ld = (nh + 2 * nkv) * hd, kvd = nkv * hd;
    size_t n = (size_t)T * ld, nq = (size_t)T * nh * hd;
    uint16_t *qkv = malloc(n * 2), *a = malloc(nq * 2), *b = malloc(nq * 2);
    int32_t seg[150];
    for (int t = 0; t < T; t++) seg[t] = t < 70 ? 0 : t < 71 ? 70 : 71;
    fill_normal16(qkv, n, 1.0, 5150);
    uint16_t *d = to_dev(o, qkv, n * 2), *kc = to_dev(o, NULL, (size_t)T * kvd * 2), *vc = to_dev(o, NULL, (size_t)T * kvd * 2);
    uint16_t *out = to_dev(o, NULL, nq * 2);
    int32_t *dseg = to_dev(o, seg, sizeof seg);
    const uint16_t *k = d + nh * hd, *v = k + kvd;
    cr_assert_eq(ak_ops_kv_store(o, k, v, ld, T, 0, nkv, hd, 0, kc, vc, T, err), 0, "%s", err);
    for (int packed = 0; packed < 2; packed++)
        for (int impl = 1; impl <= 4; impl++) {
            int rc = packed ? ak_ops_attention_packed(o, (ak_attn_impl)impl, d, ld, kc, vc, T, T, dseg, nh, nkv, hd, out, err)
                            : ak_ops_attention(o, (ak_attn_impl)impl, d, ld, kc, vc, T, T, 0, nh, nkv, hd, out, err);
            cr_assert_eq(rc, 0, "%s", err);
            from_dev(o, a, out, nq * 2);
            cr_assert_eq(ak_ops_attention_prefill(o, (ak_attn_impl)impl, d, ld, k, v, ld, T, packed ? dseg : NULL, nh, nkv,
                                                  hd, out, err), 0, "%s", err);
            from_dev(o, b, out, nq * 2);
            cr_assert_eq(memcmp(a, b, nq * 2), 0, "prefill differs from the cache route (packed %d, impl %d)", packed, impl);
        }
    cr_assert_neq(ak_ops_attention_prefill(o, AK_ATTN_TC, d, ld, k, v, kvd - 1, T, NULL, nh, nkv, hd, out, err), 0);
    ak_ops_dfree(o, d); ak_ops_dfree(o, kc); ak_ops_dfree(o, vc); ak_ops_dfree(o, out); ak_ops_dfree(o, dseg);
    free(qkv); free(a); free(b);
    ak_ops_free(o);
}

/* ---- 16-byte / 4-byte elementwise paths ------------------------------------------------------ */

/* ak_ops picks 16-byte SwiGLU and RMSNorm kernels and a 4-byte RoPE kernel when widths and pointers
 * allow, the scalar kernels otherwise. The same data at an element offset of 1 (2-byte aligned
 * pointers) takes the scalar kernels. SwiGLU and RoPE do the same fp32 operations per element either
 * way: byte-identical outputs. RMSNorm sums squares in another order: at most 2 ulps apart (the
 * rounding argument of rmsnorm_and_add_rmsnorm_match_hf_formula), and the x + r written back equal. */
Test(gpu_ops, vector_elementwise_paths_equal_scalar_paths) {
    NEED_DEVICE();
    ak_ops *o = ctx_new();
    char err[AX_ERR_LEN] = "";
    enum { T = 5, H = 1024, D = 2048 };
    /* SwiGLU from a fused gate|up buffer, row stride 2H */
    size_t nin = (size_t)T * 2 * H, nout = (size_t)T * H;
    uint16_t *in = malloc((nin + 1) * 2), *va = malloc(nout * 2), *sa = malloc(nout * 2);
    fill_normal16(in, nin + 1, 3.0, 31);
    uint16_t *din = to_dev(o, NULL, (nin + 8) * 2), *dout = to_dev(o, NULL, (nout + 8) * 2);
    cr_assert_eq(ak_ops_upload(o, din, in, nin * 2, err), 0, "%s", err);
    cr_assert_eq(ak_ops_swiglu(o, din, din + H, 2 * H, T, H, dout, err), 0, "%s", err);
    from_dev(o, va, dout, nout * 2);
    cr_assert_eq(ak_ops_upload(o, din + 1, in, nin * 2, err), 0, "%s", err);
    cr_assert_eq(ak_ops_swiglu(o, din + 1, din + 1 + H, 2 * H, T, H, dout + 1, err), 0, "%s", err);
    from_dev(o, sa, dout + 1, nout * 2);
    cr_assert_eq(memcmp(va, sa, nout * 2), 0, "SwiGLU: 16-byte and scalar kernels differ");
    /* RoPE, head_dim 128, q with a padded stride; q and k in one buffer */
    ak_ops_rope_cfg rc = {128, 10000.0f, 0, 0, 0, 0, 0};
    cr_assert_eq(ak_ops_rope_init(o, &rc, 4096, err), 0, "%s", err);
    int nh = 4, nkv = 2, q_ld = nh * 128 + 8, k_ld = nkv * 128;
    size_t nq = (size_t)T * q_ld, nk = (size_t)T * k_ld;
    uint16_t *qk = malloc((nq + nk) * 2), *vq = malloc((nq + nk) * 2), *sq = malloc((nq + nk) * 2);
    fill_normal16(qk, nq + nk, 1.0, 32);
    uint16_t *dq = to_dev(o, NULL, (nq + nk + 8) * 2);
    for (int off = 0; off < 2; off++) {
        cr_assert_eq(ak_ops_upload(o, dq + off, qk, (nq + nk) * 2, err), 0, "%s", err);
        cr_assert_eq(ak_ops_rope(o, dq + off, q_ld, nh, dq + off + nq, k_ld, nkv, T, 1000, err), 0, "%s", err);
        from_dev(o, off ? sq : vq, dq + off, (nq + nk) * 2);
    }
    cr_assert_eq(memcmp(vq, sq, (nq + nk) * 2), 0, "RoPE: 4-byte and scalar kernels differ");
    /* add-RMSNorm */
    size_t nx = (size_t)T * D;
    uint16_t *x = malloc(nx * 2), *r = malloc(nx * 2), *w = malloc(D * 2);
    uint16_t *vo = malloc(nx * 2), *so = malloc(nx * 2), *vx = malloc(nx * 2), *sx = malloc(nx * 2);
    fill_normal16(x, nx, 1.5, 33);
    fill_normal16(r, nx, 0.5, 34);
    fill_normal16(w, D, 1.0, 35);
    uint16_t *dx = to_dev(o, NULL, (nx + 8) * 2), *dr = to_dev(o, NULL, (nx + 8) * 2);
    uint16_t *dw = to_dev(o, NULL, (D + 8) * 2), *dn = to_dev(o, NULL, (nx + 8) * 2);
    for (int off = 0; off < 2; off++) {
        cr_assert_eq(ak_ops_upload(o, dx + off, x, nx * 2, err), 0, "%s", err);
        cr_assert_eq(ak_ops_upload(o, dr + off, r, nx * 2, err), 0, "%s", err);
        cr_assert_eq(ak_ops_upload(o, dw + off, w, D * 2, err), 0, "%s", err);
        cr_assert_eq(ak_ops_add_rmsnorm(o, dx + off, dr + off, dw + off, T, D, 1e-5f, dn + off, err), 0, "%s", err);
        from_dev(o, off ? so : vo, dn + off, nx * 2);
        from_dev(o, off ? sx : vx, dx + off, nx * 2);
    }
    cr_assert_eq(memcmp(vx, sx, nx * 2), 0, "add-RMSNorm: x + r differs between the kernels");
    long same = 0;
    for (size_t i = 0; i < nx; i++) {
        cr_assert_leq(ulps16(vo[i], so[i]), 2, "RMSNorm [%zu]: 0x%04x vs 0x%04x", i, vo[i], so[i]);
        same += vo[i] == so[i];
    }
    cr_assert_geq(same, (long)(0.95 * nx), "RMSNorm: only %ld of %zu equal", same, nx);
    ak_ops_dfree(o, din); ak_ops_dfree(o, dout); ak_ops_dfree(o, dq);
    ak_ops_dfree(o, dx); ak_ops_dfree(o, dr); ak_ops_dfree(o, dw); ak_ops_dfree(o, dn);
    free(in); free(va); free(sa); free(qk); free(vq); free(sq);
    free(x); free(r); free(w); free(vo); free(so); free(vx); free(sx);
    ak_ops_free(o);
}
