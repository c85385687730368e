/* aq_quant.c — symmetric group quantizer, mixed-granularity weights, Atom-style permuted operands,
 * dequantization, fake-quant and the 4-bit asymmetric KV-cache quantizer: the CPU reference of
 * NUMERICS.md ("Symmetric quantizer", "Mixed granularity", "Atom-style W4Ax", "KV-cache 4-bit";
 * decisions the contract leaves open are in quant/NUMERICS.md "apex4 clarifications").
 * Compiled with -ffp-contract=off and without -ffast-math: every fp32 operation below rounds once. */
#include "aq.h"
#include "aq_priv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* rne_int(r) clamped to [lo, hi] in the float domain (never converts an out-of-range float). */
static int rne_clamp(float r, int lo, int hi) {
    float v = rintf(r);                 /* default rounding mode: half to even */
    if (!(v >= (float)lo)) return lo;   /* also catches -inf */
    if (v > (float)hi) return hi;
    return (int)v;
}

uint16_t aq_quant_group(const float *v, int L, int bits, float alpha, int8_t *q) {
    const int qmax = (1 << (bits - 1)) - 1, qmin = -(1 << (bits - 1));
    float amax = 0.0f;
    for (int i = 0; i < L; i++) {
        float a = fabsf(v[i]);
        if (a > amax) amax = a;
    }
    float t = alpha == 1.0f ? amax : amax * alpha;
    float s32 = t / (float)qmax;
    uint16_t s = aq_f32_to_f16(s32 < 65504.0f ? s32 : 65504.0f);
    float sf = aq_f16_to_f32(s);
    for (int i = 0; i < L; i++) q[i] = (int8_t)(sf == 0.0f ? 0 : rne_clamp(v[i] / sf, qmin, qmax));
    return s;
}

int aq_pack_int4(const int8_t *q, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        if (q[i] < -8 || q[i] > 7) return -1;
    for (size_t i = 0; i < n; i += 2) {
        uint8_t lo = (uint8_t)(q[i] & 0x0f), hi = i + 1 < n ? (uint8_t)(q[i + 1] & 0x0f) : 0;
        dst[i / 2] = (uint8_t)(lo | (hi << 4));
    }
    return 0;
}

void aq_unpack_int4(const uint8_t *src, size_t n, int8_t *q) {
    for (size_t i = 0; i < n; i++) {
        int nib = (i & 1) ? (src[i / 2] >> 4) : (src[i / 2] & 0x0f);
        q[i] = (int8_t)((nib ^ 8) - 8);
    }
}

int aq_check_perm(const int32_t *perm, int K, const char *what, char *err) {
    if (!perm) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: a channel permutation perm [%d] is required", what, K);
        return -1;
    }
    unsigned char *seen = calloc((size_t)K, 1);
    if (!seen) { if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory", what); return -1; }
    for (int i = 0; i < K; i++) {
        int32_t p = perm[i];
        if (p < 0 || p >= K || seen[p]) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: perm is not a permutation of 0..%d: perm[%d] = %d%s",
                              what, K - 1, i, (int)p, (p >= 0 && p < K) ? " (repeated)" : " (out of range)");
            free(seen);
            return -1;
        }
        seen[p] = 1;
    }
    free(seen);
    return 0;
}

static void qmat_free(aq_qmat *q) {
    free(q->codes); free(q->scales); free(q->sub);
    memset(q, 0, sizeof *q);
}

void aq_qtensor_free(aq_qtensor *t) {
    if (!t) return;
    qmat_free(&t->main);
    qmat_free(&t->outl);
    free(t->perm);
    t->perm = NULL;
}

static int qmat_alloc(aq_qmat *q, int rows, int cols, int bits, int group, int with_sub, char *err,
                      const char *what) {
    memset(q, 0, sizeof *q);
    q->rows = rows; q->cols = cols; q->bits = bits;
    q->group = group;
    q->ngroups = (cols + group - 1) / group;
    size_t rb = bits == 4 ? (size_t)((cols + 1) / 2) : (size_t)cols;
    size_t sc = with_sub ? 1 : (size_t)q->ngroups;
    q->codes = calloc((size_t)rows * rb, 1);
    q->scales = calloc((size_t)rows * sc, sizeof *q->scales);
    if (with_sub) q->sub = calloc((size_t)rows * (size_t)q->ngroups, 1);
    if (!q->codes || !q->scales || (with_sub && !q->sub)) {
        qmat_free(q);
        if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory for %d x %d codes", what, rows, cols);
        return -1;
    }
    return 0;
}

static void put_code(aq_qmat *q, int r, int c, int code) {
    if (q->bits == 4) {
        uint8_t *b = &q->codes[(size_t)r * aq_qmat_row_bytes(q) + (size_t)(c >> 1)];
        uint8_t nib = (uint8_t)(code & 0x0f);
        *b = (c & 1) ? (uint8_t)((*b & 0x0f) | (nib << 4)) : (uint8_t)((*b & 0xf0) | nib);
    } else {
        q->codes[(size_t)r * (size_t)q->cols + (size_t)c] = (uint8_t)(int8_t)code;
    }
}

/* Symmetric group quantization of columns map[c0 .. c0+cols) (map NULL = identity) of src
 * [rows, K] fp32 into q (allocated here). */
static int quant_part(const float *src, int rows, int K, const int32_t *map, int c0, int cols,
                      int bits, int group, float alpha, aq_qmat *q, const char *what, char *err) {
    if (qmat_alloc(q, rows, cols, bits, group, 0, err, what)) return -1;
    float *v = malloc((size_t)group * sizeof *v);
    int8_t *c = malloc((size_t)group);
    if (!v || !c) {
        free(v); free(c); qmat_free(q);
        if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory", what);
        return -1;
    }
    for (int r = 0; r < rows; r++) {
        const float *row = src + (size_t)r * (size_t)K;
        for (int j = 0; j < q->ngroups; j++) {
            int k0 = j * group, L = cols - k0 < group ? cols - k0 : group;
            for (int i = 0; i < L; i++) v[i] = row[map ? map[c0 + k0 + i] : c0 + k0 + i];
            q->scales[(size_t)r * (size_t)q->ngroups + (size_t)j] = aq_quant_group(v, L, bits, alpha, c);
            for (int i = 0; i < L; i++) put_code(q, r, k0 + i, c[i]);
        }
    }
    free(v); free(c);
    return 0;
}

/* Mixed granularity weights (NUMERICS.md "Mixed granularity"): per-row fp16 S, per-group u in
 * 1..15, 4-bit codes. S == 0 (all |f_j| tiny or zero) -> every u = 1 and every code 0. */
static int quant_mixed_w(const float *src, int rows, int K, int group, float alpha, aq_qmat *q,
                         const char *what, char *err) {
    if (qmat_alloc(q, rows, K, 4, group, 1, err, what)) return -1;
    float *f = malloc((size_t)q->ngroups * sizeof *f);
    if (!f) { qmat_free(q); if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory", what); return -1; }
    for (int r = 0; r < rows; r++) {
        const float *row = src + (size_t)r * (size_t)K;
        float fmax = 0.0f;
        for (int j = 0; j < q->ngroups; j++) {
            int k0 = j * group, k1 = k0 + group < K ? k0 + group : K;
            float amax = 0.0f;
            for (int k = k0; k < k1; k++) { float a = fabsf(row[k]); if (a > amax) amax = a; }
            float t = alpha == 1.0f ? amax : amax * alpha;
            f[j] = t / 7.0f;
            if (f[j] > fmax) fmax = f[j];
        }
        float S32 = fmax / 15.0f;
        uint16_t S = aq_f32_to_f16(S32 < 65504.0f ? S32 : 65504.0f);
        float Sf = aq_f16_to_f32(S);
        q->scales[r] = S;
        for (int j = 0; j < q->ngroups; j++) {
            int u = Sf == 0.0f ? 1 : rne_clamp(f[j] / Sf, 1, 15);
            q->sub[(size_t)r * (size_t)q->ngroups + (size_t)j] = (uint8_t)u;
            float su = Sf * (float)u;                 /* fp32 multiply (exact: 11 x 4 bits) */
            int k0 = j * group, k1 = k0 + group < K ? k0 + group : K;
            for (int k = k0; k < k1; k++)
                put_code(q, r, k, Sf == 0.0f ? 0 : rne_clamp(row[k] / su, -8, 7));
        }
    }
    free(f);
    return 0;
}

/* Shared body of aq_quantize_x / aq_quantize_w on fp32 values that are fp16-representable. The
 * operand's fields (m->w or m->x) give bits, group and clip; a permuted mode quantizes the main part
 * perm[0 .. K-o) and, when o = m->outliers > 0, the outlier part perm[K-o .. K) in m->outl's format
 * (one group per row). Sub-scaled operands (AQ_SCALE_F16_U4SUB) are never permuted in the table. */
static int quantize_f32(const aq_mode *m, int is_w, const float *x, int rows, int K,
                        const int32_t *perm, aq_qtensor *out, const char *what, char *err) {
    memset(out, 0, sizeof *out);
    if (!aq_mode_is_integer(m)) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: mode '%s' has no integer GEMM (quantize needs an integer mode)",
                          what, m ? m->name : "(null)");
        return -1;
    }
    if (!m->permuted && perm) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: a channel permutation is only used by atom modes, not '%s'",
                          what, m->name);
        return -1;
    }
    const aq_operand *op = is_w ? &m->w : &m->x;
    const int o = m->outliers, Km = K - o;
    if (Km < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: K = %d leaves no main channels next to %d outliers (%s)",
                          what, K, o, m->name);
        return -1;
    }
    out->mode = *m;
    out->rows = rows;
    out->K = K;
    if (m->permuted) {
        if (aq_check_perm(perm, K, what, err)) return -1;
        out->perm = malloc((size_t)K * sizeof *out->perm);
        if (!out->perm) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory", what);
            return -1;
        }
        memcpy(out->perm, perm, (size_t)K * sizeof *out->perm);
    }
    const int32_t *map = m->permuted ? perm : NULL;
    int rc;
    if (op->scale == AQ_SCALE_F16_U4SUB)
        rc = quant_mixed_w(x, rows, K, op->group, op->clip, &out->main, what, err);
    else
        rc = quant_part(x, rows, K, map, 0, Km, op->bits, aq_operand_group(op, Km), op->clip, &out->main, what, err);
    if (!rc && o > 0)
        rc = quant_part(x, rows, K, map, Km, o, m->outl.bits, aq_operand_group(&m->outl, o), m->outl.clip,
                        &out->outl, what, err);
    if (rc) aq_qtensor_free(out);
    return rc;
}

/* fp16 [rows, K] -> fp32, rejecting non-finite values with the tensor name and [row, col]. */
static float *f16_matrix(const uint16_t *h, int rows, int K, const char *what, char *err) {
    if (!h || rows < 1 || K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: bad shape [%d, %d] or NULL data", what, rows, K);
        return NULL;
    }
    size_t n = (size_t)rows * (size_t)K;
    float *f = malloc(n * sizeof *f);
    if (!f) { if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory for [%d, %d]", what, rows, K); return NULL; }
    for (size_t i = 0; i < n; i++) {
        if ((h[i] & 0x7c00u) == 0x7c00u) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: non-finite fp16 value (0x%04x) at [%zu, %zu]", what,
                              h[i], i / (size_t)K, i % (size_t)K);
            free(f);
            return NULL;
        }
        f[i] = aq_f16_to_f32(h[i]);
    }
    return f;
}

int aq_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                  aq_qtensor *out, char *err) {
    memset(out, 0, sizeof *out);
    float *f = f16_matrix(x, M, K, "X", err);
    if (!f) return -1;
    int rc = quantize_f32(m, 0, f, M, K, perm, out, "X", err);
    free(f);
    return rc;
}

int aq_quantize_w(const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm,
                  aq_qtensor *out, char *err) {
    memset(out, 0, sizeof *out);
    float *f = f16_matrix(w, N, K, "W", err);
    if (!f) return -1;
    int rc = quantize_f32(m, 1, f, N, K, perm, out, "W", err);
    free(f);
    return rc;
}

/* Dequantize columns of q into out [rows, K] at original columns map[c0 + c] (map NULL = identity). */
static void deq_part(const aq_qmat *q, const int32_t *map, int c0, float *out, int K) {
    for (int r = 0; r < q->rows; r++)
        for (int c = 0; c < q->cols; c++) {
            int j = c / q->group;
            float v;
            if (q->sub) {
                float su = aq_f16_to_f32(q->scales[r]) * (float)q->sub[(size_t)r * (size_t)q->ngroups + (size_t)j];
                v = (float)aq_qmat_code(q, r, c) * su;
            } else {
                v = (float)aq_qmat_code(q, r, c) * aq_f16_to_f32(q->scales[(size_t)r * (size_t)q->ngroups + (size_t)j]);
            }
            out[(size_t)r * (size_t)K + (size_t)(map ? map[c0 + c] : c0 + c)] = v;
        }
}

int aq_dequantize(const aq_qtensor *t, float *out, char *err) {
    if (!t || !out || !t->main.codes || t->K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "dequantize: empty quantized tensor or NULL output");
        return -1;
    }
    if (!t->mode.permuted) {
        deq_part(&t->main, NULL, 0, out, t->K);
        return 0;
    }
    if (aq_check_perm(t->perm, t->K, "dequantize (atom tensor's perm)", err)) return -1;
    deq_part(&t->main, t->perm, 0, out, t->K);
    if (t->outl.rows) deq_part(&t->outl, t->perm, t->main.cols, out, t->K);
    return 0;
}

int aq_fakequant(const aq_mode *m, int is_weight, const float *src, int rows, int K,
                 const int32_t *perm, float *dst, const char *what, char *err) {
    if (!what) what = is_weight ? "W" : "X";
    if (!m || !src || !dst || rows < 1 || K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: fake-quant: bad shape [%d, %d] or NULL argument", what, rows, K);
        return -1;
    }
    size_t n = (size_t)rows * (size_t)K;
    const aq_operand *op = is_weight ? &m->w : &m->x;
    if (op->elem == AQ_ELEM_F16) {   /* a float operand: exact copy */
        if (perm) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: a channel permutation is only used by atom modes, not '%s'",
                              what, m->name);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            if (!isfinite(src[i])) {
                if (err) snprintf(err, AX_ERR_LEN, "%s: non-finite value %g at [%zu, %zu]", what,
                                  (double)src[i], i / (size_t)K, i % (size_t)K);
                return -1;
            }
        if (dst != src) memmove(dst, src, n * sizeof *dst);
        return 0;
    }
    uint16_t *h = malloc(n * sizeof *h);
    float *f = malloc(n * sizeof *f);
    if (!h || !f) {
        free(h); free(f);
        if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory for [%d, %d]", what, rows, K);
        return -1;
    }
    int rc = aq_f32_to_f16_checked(src, h, n, what, err);
    if (!rc) for (size_t i = 0; i < n; i++) f[i] = aq_f16_to_f32(h[i]);
    free(h);
    if (rc) { free(f); return -1; }
    if (!aq_mode_is_integer(m)) {    /* a quantized operand without integer GEMM (W of w4a16-gN) */
        if (perm) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: a channel permutation is only used by atom modes, not '%s'",
                              what, m->name);
            free(f);
            return -1;
        }
        aq_qmat q;
        rc = quant_part(f, rows, K, NULL, 0, K, op->bits, aq_operand_group(op, K), op->clip, &q, what, err);
        if (!rc) { deq_part(&q, NULL, 0, dst, K); qmat_free(&q); }
        free(f);
        return rc;
    }
    aq_qtensor t;
    rc = quantize_f32(m, is_weight, f, rows, K, perm, &t, what, err);
    free(f);
    if (rc) return -1;
    rc = aq_dequantize(&t, dst, err);
    aq_qtensor_free(&t);
    return rc;
}

/* KV-cache 4-bit asymmetric (NUMERICS.md "KV-cache 4-bit"). Every x is first rounded to fp16 (what
 * the cache stores); s = fp16_rne((max - min) / 15); s == 0 (max == min, or the range underflows
 * fp16) -> x̂ = the fp16-rounded x (= min when max == min). Non-finite input: x left unchanged. */
void aq_kv4_fakequant(float *x, int n) {
    if (!x || n <= 0) return;
    float mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        float h = aq_f16_to_f32(aq_f32_to_f16(x[i]));
        if (!isfinite(h)) return;                     /* NaN, inf or |x| > 65504: unchanged */
        if (h < mn) mn = h;
        if (h > mx) mx = h;
    }
    for (int i = 0; i < n; i++) x[i] = aq_f16_to_f32(aq_f32_to_f16(x[i]));
    float range = mx - mn;                            /* fp32, RNE (<= 131008: finite) */
    float s32 = range / 15.0f;
    float s = aq_f16_to_f32(aq_f32_to_f16(s32));      /* <= 8734: no fp16 overflow */
    if (s == 0.0f) return;
    double z = (double)rintf(-mn / s);                /* integer-valued, exact in double */
    for (int i = 0; i < n; i++) {
        double q = (double)rintf(x[i] / s) + z;        /* exact: both integers below 2^53 */
        if (q < 0.0) q = 0.0;
        if (q > 15.0) q = 15.0;
        x[i] = (float)(q - z) * s;                     /* (q - z) -> float RNE, one fp32 multiply */
    }
}
