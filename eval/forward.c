/* forward.c — LLaMA forward pass on the CPU in fp32 with quantized projections (see forward.h).
 *
 * Per layer, straight-line as in llama2.c run.c forward() and HF modeling_llama.py LlamaDecoderLayer:
 *   xb = rmsnorm(x, attn_norm)                       site ATTN_IN  (q/k/v input)
 *   q, k, v = xb·Wqᵀ, xb·Wkᵀ, xb·Wvᵀ                 quantized projections
 *   rope(q, k) rotate-half                           HF apply_rotary_pos_emb
 *   [kv4: k, v fake-quantized per (token, head)]     NUMERICS.md "KV-cache 4-bit"
 *   att = softmax(q·kᵀ/√hd, causal) · v  (GQA)        fp32
 *   x += att·Woᵀ                                     site ATTN_OUT (o input)
 *   xb = rmsnorm(x, ffn_norm)                        site MLP_IN   (gate/up input)
 *   x += (silu(xb·Wgᵀ) ⊙ xb·Wuᵀ)·Wdᵀ                 site MLP_OUT  (down input)
 * then logits = rmsnorm(x, final_norm)·lm_headᵀ (fp32).
 * Linear layers: T×K by K×N through OpenBLAS sgemm on fake-quantized operands (aq_fakequant: weights
 * once at build, activations per call, once per site since q/k/v and gate/up share their input), or
 * with --gemm exact through the contract's integer reference aq_gemm (fp16 in, fp16 out). */
#include "forward.h"
#include "ax_util.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stdarg.h>
#define SETERR(...) ax_seterr(err, __VA_ARGS__)

/* ---- threads -------------------------------------------------------------------------------- */

int ae_ncores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

typedef struct {
    ae_range_fn fn;
    void *ctx;
    long start, end;
    int tid;
} par_job;

static void *par_main(void *arg) {
    par_job *j = arg;
    j->fn(j->ctx, j->start, j->end, j->tid);
    return NULL;
}

void ae_parallel_for(int nthreads, long n, long min_chunk, ae_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (nthreads <= 0) nthreads = ae_ncores();
    if (min_chunk < 1) min_chunk = 1;
    long maxt = n / min_chunk;
    if (maxt < 1) maxt = 1;
    if (nthreads > maxt) nthreads = (int)maxt;
    if (nthreads > 64) nthreads = 64;
    if (nthreads <= 1) { fn(ctx, 0, n, 0); return; }
    par_job jobs[64];
    pthread_t th[64];
    int started[64] = {0};
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = (par_job){fn, ctx, n * t / nthreads, n * (t + 1) / nthreads, t};
    }
    for (int t = 1; t < nthreads; t++)
        started[t] = pthread_create(&th[t], NULL, par_main, &jobs[t]) == 0;
    fn(ctx, jobs[0].start, jobs[0].end, 0);
    for (int t = 1; t < nthreads; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else fn(ctx, jobs[t].start, jobs[t].end, t); /* could not start: run it here */
    }
}

/* ---- exp ------------------------------------------------------------------------------------ */

#define EXP_HI 88.7228317f
#define EXP_LO (-87.3365479f)
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

static inline float exp_scalar(float y) {
    if (y > EXP_HI) return INFINITY;
    if (y < EXP_LO) return 0.0f;       /* NaN fails both tests and propagates below */
    float n = rintf(y * EXP_LOG2E);
    float r = y - n * EXP_C1;
    r = r - n * EXP_C2;
    float z = r * r;
    float p = EXP_P0 * r + EXP_P1;
    p = p * r + EXP_P2;
    p = p * r + EXP_P3;
    p = p * r + EXP_P4;
    p = p * r + EXP_P5;
    p = p * z + r;
    p = p + 1.0f;
    int32_t e = (int32_t)n + 127;      /* y in [LO, HI] gives n in [-126, 128], e in [1, 255] */
    if (e >= 255) { e -= 1; p = p * 2.0f; }  /* 2^128 is not a float: 2^127 and double p */
    uint32_t bits = (uint32_t)e << 23;
    float sc;
    memcpy(&sc, &bits, sizeof sc);
    return p * sc;
}

#if defined(__AVX2__)
#include <immintrin.h>
static inline __m256 exp_avx2(__m256 y) {
    const __m256 hi = _mm256_set1_ps(EXP_HI), lo = _mm256_set1_ps(EXP_LO);
    __m256 big = _mm256_cmp_ps(y, hi, _CMP_GT_OQ), small = _mm256_cmp_ps(y, lo, _CMP_LT_OQ);
    __m256 yc = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_or_ps(big, small)); /* NaN kept */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(yc, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(yc, _mm256_mul_ps(n, _mm256_set1_ps(EXP_C1)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(EXP_C2)));
    __m256 z = _mm256_mul_ps(r, r);
    __m256 p = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(EXP_P0), r), _mm256_set1_ps(EXP_P1));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P2));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P3));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P4));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P5));
    p = _mm256_add_ps(_mm256_mul_ps(p, z), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    /* e == 255 (n = 128): use 2^127 and double p, as the scalar path does */
    __m256i top = _mm256_cmpeq_epi32(e, _mm256_set1_epi32(255));
    e = _mm256_sub_epi32(e, _mm256_and_si256(top, _mm256_set1_epi32(1)));
    p = _mm256_blendv_ps(p, _mm256_mul_ps(p, _mm256_set1_ps(2.0f)), _mm256_castsi256_ps(top));
    __m256 sc = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    __m256 res = _mm256_mul_ps(p, sc);
    res = _mm256_blendv_ps(res, _mm256_set1_ps(INFINITY), big);
    res = _mm256_blendv_ps(res, _mm256_setzero_ps(), small);
    return res;
}
#endif

void ae_exp_shifted(const float *x, float shift, float *out, int n) {
    int i = 0;
#if defined(__AVX2__)
    __m256 sh = _mm256_set1_ps(shift);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
#endif
    for (; i < n; i++) out[i] = exp_scalar(x[i] - shift);
}

/* ---- runner ---------------------------------------------------------------------------------- */

typedef struct {
    const float *w;     /* (N, K) fp32 used by sgemm: `owned` (NULL on the exact path)         */
    float *owned;       /* (N, K) the checkpoint's values widened to fp32 (FP16, WONLY-exact)
                         * or fake-quantized; NULL on the exact integer path                  */
    aq_qtensor q;       /* exact path: the quantized weight (aq_quantize_w), else zeroed        */
    int has_q;
    int N, K, site;
    const char *name;   /* "q_proj", ...                                                       */
} ae_lin;

enum { L_Q, L_K, L_V, L_O, L_GATE, L_UP, L_DOWN, L_N };
static const char *const lin_names[L_N] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                           "gate_proj", "up_proj", "down_proj"};
static const int lin_site[L_N] = {AE_SITE_ATTN_IN, AE_SITE_ATTN_IN, AE_SITE_ATTN_IN,
                                  AE_SITE_ATTN_OUT, AE_SITE_MLP_IN, AE_SITE_MLP_IN,
                                  AE_SITE_MLP_OUT};
static const char *const site_names[AE_NSITES] = {"attn_in", "attn_out", "mlp_in", "mlp_out"};

struct ae_runner {
    const ae_model *m;
    ae_run_opts opts;        /* nthreads resolved                                              */
    int quant_x;             /* activations quantized (integer modes)                          */
    int exact;               /* integer reference GEMM (gemm exact and an integer mode)        */
    ae_lin (*lin)[L_N];      /* (n_layers, 7)                                                  */
    float *attn_norm;        /* (n_layers, dim) input_layernorm weights, fp32                  */
    float *ffn_norm;         /* (n_layers, dim) post_attention_layernorm weights, fp32         */
    float *final_norm;       /* (dim) model.norm.weight, fp32                                  */
    float *lm_head;          /* (vocab_size, dim) lm_head (embed_tokens when tied), fp32       */
    int32_t **perm;          /* (n_layers*4) ATOM channel orders (copies), else NULL           */
    int q_dim, kv_dim, max_k;
    int pos;                 /* cached positions                                               */
    float *kcache, *vcache;  /* (n_layers, max_seq, kv_dim)                                    */
    float *rope_cos, *rope_sin; /* (max_seq, head_dim/2)                                       */
    /* scratch, rows = max_seq */
    float *x;                /* (max_seq, dim) residual stream                                 */
    float *xb;               /* (max_seq, max(dim, q_dim)) normed input / attention output     */
    float *xq;               /* (max_seq, max_k) fake-quantized site input                     */
    float *q;                /* (max_seq, q_dim)                                               */
    float *hb;               /* (max_seq, max(hidden_dim, dim)) gate / o_proj output           */
    float *hb2;              /* (max_seq, hidden_dim) up output                                */
    int rowblock;            /* attention rows per block (<= AE_ROWBLOCK)                      */
    float *scores;           /* (n_heads, rowblock, max_seq) attention probabilities           */
    uint16_t *x16;           /* exact: (max_seq, max_k) fp16 site input                        */
    uint16_t *y16;           /* exact: (max_seq, max(q_dim, hidden, dim)) fp16 output          */
    aq_qtensor qx;           /* exact: the current site's quantized activations                */
    int has_qx;
    ae_calib *collect;       /* calibration: Σx² accumulation, or NULL                         */
};

#define AE_ROWBLOCK 256

static int imax(int a, int b) { return a > b ? a : b; }

int ae_mode_check(const ae_model *m, const aq_mode *mode, char *err) {
    const ae_config *c = &m->cfg;
    if (!mode->needs_calib) return 0;
    int q_dim = c->n_heads * c->head_dim;
    int widths[AE_NSITES] = {c->dim, q_dim, c->dim, c->hidden_dim};
    for (int s = 0; s < AE_NSITES; s++)
        if (widths[s] <= mode->outliers) {
            SETERR("mode %s does not apply to %s: linear input '%s' has K = %d channels, not more than "
                   "the %d outlier channels (use a smaller o, e.g. atom-g%d-o%d)",
                   mode->name, m->dir, site_names[s], widths[s], mode->outliers,
                   mode->w.group > 0 && mode->w.group < widths[s] ? mode->w.group : 32,
                   widths[s] / 16 > 0 ? widths[s] / 16 : 1);
            return -1;
        }
    return 0;
}

static const ae_tensor_id lin_tensor[L_N] = {AE_T_WQ, AE_T_WK, AE_T_WV, AE_T_WO, AE_T_GATE, AE_T_UP, AE_T_DOWN};

/* RoPE inverse frequencies as HF LlamaRotaryEmbedding computes them (float32 base ** (2i/d)),
 * with rope_scaling llama3 (HF _compute_llama3_parameters) when the config has it. */
static void rope_tables(const ae_config *c, int max_seq, float *cosv, float *sinv) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)c->head_dim;
        float inv = 1.0f / powf(c->rope_theta, e);
        if (c->rope_llama3) {
            double lf = c->rope_low_freq_factor, hf = c->rope_high_freq_factor, f = c->rope_factor;
            double old = c->rope_orig_max_pos;
            double low_wl = old / lf, high_wl = old / hf, wl = 2.0 * M_PI / inv, v = inv;
            if (wl < high_wl) v = inv;
            else if (wl > low_wl) v = inv / f;
            else {
                double sm = (old / wl - lf) / (hf - lf);
                v = (1.0 - sm) * inv / f + sm * inv;
            }
            inv = (float)v;
        }
        for (int p = 0; p < max_seq; p++) {
            float a = (float)p * inv;
            cosv[(size_t)p * half + i] = cosf(a);
            sinv[(size_t)p * half + i] = sinf(a);
        }
    }
}

void ae_runner_free(ae_runner *r) {
    if (!r) return;
    if (r->lin) {
        for (int l = 0; l < r->m->cfg.n_layers; l++)
            for (int i = 0; i < L_N; i++) {
                free(r->lin[l][i].owned);
                if (r->lin[l][i].has_q) aq_qtensor_free(&r->lin[l][i].q);
            }
        free(r->lin);
    }
    if (r->perm) {
        for (int i = 0; i < r->m->cfg.n_layers * AE_NSITES; i++) free(r->perm[i]);
        free(r->perm);
    }
    if (r->has_qx) aq_qtensor_free(&r->qx);
    free(r->attn_norm); free(r->ffn_norm); free(r->final_norm); free(r->lm_head);
    free(r->kcache); free(r->vcache); free(r->rope_cos); free(r->rope_sin);
    free(r->x); free(r->xb); free(r->xq); free(r->q); free(r->hb); free(r->hb2); free(r->scores);
    free(r->x16); free(r->y16);
    free(r);
}

static void *xcalloc(size_t n, size_t sz, int *fail) {
    if (n == 0) n = 1;
    void *p = calloc(n, sz);
    if (!p) *fail = 1;
    return p;
}

int ae_runner_build(const ae_model *m, const ae_run_opts *opts, const ae_calib *calib,
                    ae_runner **out, char *err) {
    *out = NULL;
    const ae_config *c = &m->cfg;
    if (!opts) { SETERR("ae_runner_build: opts is NULL"); return -1; }
    if (opts->max_seq < 1) { SETERR("ae_runner_build: max_seq %d < 1", opts->max_seq); return -1; }
    if (c->head_dim % 2) { SETERR("%s: head_dim %d is odd (RoPE needs pairs)", m->dir, c->head_dim); return -1; }
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads) {
        SETERR("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", m->dir,
               c->n_heads, c->n_kv_heads);
        return -1;
    }
    if (opts->gemm != AE_GEMM_FAKE && opts->gemm != AE_GEMM_EXACT) {
        SETERR("ae_runner_build: unknown gemm kind %d", (int)opts->gemm);
        return -1;
    }
    if (ae_mode_check(m, &opts->mode, err)) return -1;
    const aq_mode *mode = &opts->mode;
    if (mode->needs_calib) {
        if (!calib) { SETERR("mode %s needs calibration (Σx² per channel), none given", mode->name); return -1; }
        if (calib->n_layers != c->n_layers) {
            SETERR("calibration has %d layers, model %s has %d", calib->n_layers, m->dir, c->n_layers);
            return -1;
        }
    }
    ae_runner *r = calloc(1, sizeof *r);
    if (!r) { SETERR("out of memory"); return -1; }
    r->m = m;
    r->opts = *opts;
    if (r->opts.nthreads <= 0) r->opts.nthreads = ae_ncores();
    r->quant_x = aq_mode_is_integer(mode);
    r->exact = opts->gemm == AE_GEMM_EXACT && r->quant_x;
    r->q_dim = c->n_heads * c->head_dim;
    r->kv_dim = c->n_kv_heads * c->head_dim;
    r->max_k = imax(imax(c->dim, r->q_dim), c->hidden_dim);
    int S = opts->max_seq, fail = 0, nl = c->n_layers;
    size_t Ss = (size_t)S;
    r->lin = xcalloc((size_t)nl, sizeof *r->lin, &fail);
    r->attn_norm = xcalloc((size_t)nl * (size_t)c->dim, sizeof(float), &fail);
    r->ffn_norm = xcalloc((size_t)nl * (size_t)c->dim, sizeof(float), &fail);
    r->final_norm = xcalloc((size_t)c->dim, sizeof(float), &fail);
    r->lm_head = xcalloc((size_t)c->vocab_size * (size_t)c->dim, sizeof(float), &fail);
    r->kcache = xcalloc((size_t)nl * Ss * (size_t)r->kv_dim, sizeof(float), &fail);
    r->vcache = xcalloc((size_t)nl * Ss * (size_t)r->kv_dim, sizeof(float), &fail);
    r->rope_cos = xcalloc(Ss * (size_t)(c->head_dim / 2), sizeof(float), &fail);
    r->rope_sin = xcalloc(Ss * (size_t)(c->head_dim / 2), sizeof(float), &fail);
    r->x = xcalloc(Ss * (size_t)c->dim, sizeof(float), &fail);
    r->xb = xcalloc(Ss * (size_t)imax(c->dim, r->q_dim), sizeof(float), &fail);
    r->q = xcalloc(Ss * (size_t)r->q_dim, sizeof(float), &fail);
    r->hb = xcalloc(Ss * (size_t)imax(c->hidden_dim, c->dim), sizeof(float), &fail); /* also o_proj out */
    r->hb2 = xcalloc(Ss * (size_t)c->hidden_dim, sizeof(float), &fail);
    /* attention row block: up to 256 rows, all heads' scores within 8M floats */
    long rb = (8L << 20) / ((long)c->n_heads * S);
    r->rowblock = (int)(rb < 1 ? 1 : rb > AE_ROWBLOCK ? AE_ROWBLOCK : rb);
    if (r->rowblock > S) r->rowblock = S;
    r->scores = xcalloc((size_t)r->rowblock * (size_t)c->n_heads * Ss, sizeof(float), &fail);
    if (r->quant_x && !r->exact) r->xq = xcalloc(Ss * (size_t)r->max_k, sizeof(float), &fail);
    if (r->exact) {
        r->x16 = xcalloc(Ss * (size_t)r->max_k, sizeof(uint16_t), &fail);
        r->y16 = xcalloc(Ss * (size_t)imax(imax(c->dim, r->q_dim), c->hidden_dim), sizeof(uint16_t), &fail);
    }
    if (fail) {
        SETERR("out of memory building a runner for %s (max_seq %d)", m->dir, S);
        ae_runner_free(r);
        return -1;
    }
    rope_tables(c, S, r->rope_cos, r->rope_sin);
    if (mode->needs_calib) {
        r->perm = xcalloc((size_t)nl * AE_NSITES, sizeof *r->perm, &fail);
        int widths[AE_NSITES] = {c->dim, r->q_dim, c->dim, c->hidden_dim};
        for (int i = 0; !fail && i < nl * AE_NSITES; i++) {
            int w = widths[i % AE_NSITES];
            if (!calib->perm || !calib->perm[i]) {
                SETERR("calibration lacks layer %d site %s", i / AE_NSITES, site_names[i % AE_NSITES]);
                ae_runner_free(r);
                return -1;
            }
            r->perm[i] = xcalloc((size_t)w, sizeof(int32_t), &fail);
            if (!fail) memcpy(r->perm[i], calib->perm[i], (size_t)w * sizeof(int32_t));
        }
        if (fail) { SETERR("out of memory"); ae_runner_free(r); return -1; }
    }
    /* Weights: read from the model one tensor at a time (lazy access, model.h) and kept by the
     * runner: fp32 values (FP16), fake-quantized fp32 (other fake-quant modes) or aq_quantize_w
     * tensors (exact integer path, read as fp16 directly). */
    if (ae_model_read_f32(m, -1, AE_T_FINAL_NORM, 0, 1, r->final_norm, err) ||
        ae_model_read_f32(m, -1, AE_T_LM_HEAD, 0, (size_t)c->vocab_size, r->lm_head, err)) {
        ae_runner_free(r);
        return -1;
    }
    size_t big = (size_t)c->dim * (size_t)imax(imax(r->q_dim, r->kv_dim), c->hidden_dim);  /* largest N x K */
    float *tmp = NULL;          /* (N, K) fp32 staging before fake-quantization                 */
    uint16_t *w16 = NULL;       /* (N, K) fp16 staging before aq_quantize_w                     */
    if (r->exact) w16 = malloc(big * sizeof *w16);
    else if (!aq_mode_is_fp16(mode)) tmp = malloc(big * sizeof *tmp);
    if ((r->exact && !w16) || (!r->exact && !aq_mode_is_fp16(mode) && !tmp)) {
        SETERR("out of memory building a runner for %s", m->dir);
        ae_runner_free(r);
        return -1;
    }
    int rc = 0;
    char what[128];
    for (int l = 0; l < nl && !rc; l++) {
        if (ae_model_read_f32(m, l, AE_T_ATTN_NORM, 0, 1, r->attn_norm + (size_t)l * c->dim, err) ||
            ae_model_read_f32(m, l, AE_T_FFN_NORM, 0, 1, r->ffn_norm + (size_t)l * c->dim, err)) {
            rc = -1;
            break;
        }
        for (int i = 0; i < L_N && !rc; i++) {
            ae_lin *ln = &r->lin[l][i];
            int N, K;
            switch (i) {
            case L_Q: N = r->q_dim; K = c->dim; break;
            case L_K: case L_V: N = r->kv_dim; K = c->dim; break;
            case L_O: N = c->dim; K = r->q_dim; break;
            case L_GATE: case L_UP: N = c->hidden_dim; K = c->dim; break;
            default: N = c->dim; K = c->hidden_dim; break;
            }
            ln->N = N; ln->K = K; ln->site = lin_site[i]; ln->name = lin_names[i];
            const int32_t *perm = r->perm ? r->perm[l * AE_NSITES + ln->site] : NULL;
            if (ae_model_tensor_shape(m, l, lin_tensor[i], NULL, NULL, what, err)) { rc = -1; break; }
            if (r->exact) {
                if (ae_model_read_f16(m, l, lin_tensor[i], 0, (size_t)N, w16, err) ||
                    aq_quantize_w(mode, w16, N, K, perm, &ln->q, err)) {
                    rc = -1;
                    break;
                }
                ln->has_q = 1;
                continue;
            }
            ln->owned = malloc((size_t)N * (size_t)K * sizeof(float));
            if (!ln->owned) { SETERR("out of memory reading %s", what); rc = -1; break; }
            ln->w = ln->owned;
            if (aq_mode_is_fp16(mode)) {
                if (ae_model_read_f32(m, l, lin_tensor[i], 0, (size_t)N, ln->owned, err)) rc = -1;
            } else if (ae_model_read_f32(m, l, lin_tensor[i], 0, (size_t)N, tmp, err) ||
                       aq_fakequant(mode, 1, tmp, N, K, perm, ln->owned, what, err)) {
                rc = -1;
            }
        }
    }
    free(tmp);
    free(w16);
    if (rc) { ae_runner_free(r); return -1; }
    *out = r;
    return 0;
}

void ae_runner_truncate(ae_runner *r, int pos) {
    if (pos < 0) pos = 0;
    if (pos < r->pos) r->pos = pos;
}
int ae_runner_pos(const ae_runner *r) { return r->pos; }
const ae_model *ae_runner_model(const ae_runner *r) { return r->m; }
const ae_run_opts *ae_runner_opts(const ae_runner *r) { return &r->opts; }

/* ---- building blocks ---------------------------------------------------------------------------- */

/* RMSNorm (HF LlamaRMSNorm; llama2.c rmsnorm): o = w ⊙ x / sqrt(mean(x²) + eps), rows T of width n. */
static void rmsnorm_rows(float *o, const float *x, const float *w, int T, int n, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * n;
        float *orow = o + (size_t)t * n;
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / n + (double)eps));
        for (int i = 0; i < n; i++) orow[i] = w[i] * (inv * xr[i]);
    }
}

typedef struct {
    const aq_mode *mode;
    const float *src;
    float *dst;
    int K;
    const int32_t *perm;
    const char *what;
    char errs[64][AX_ERR_LEN];  /* one per thread (ae_parallel_for uses at most 64) */
    int bad[64];
} fq_ctx;

static void fq_range(void *vctx, long a, long b, int tid) {
    fq_ctx *c = vctx;
    int slot = tid;
    if (aq_fakequant(c->mode, 0, c->src + (size_t)a * c->K, (int)(b - a), c->K, c->perm,
                     c->dst + (size_t)a * c->K, c->what, c->errs[slot]))
        c->bad[slot] = 1;
}

/* Prepare the input X [T, K] of a site for its projections: accumulate calibration Σx², quantize
 * activations (fake-quant into r->xq, or aq_quantize_x into r->qx). Returns the fp32 operand for
 * sgemm (X itself, or r->xq). */
static const float *site_prepare(ae_runner *r, int layer, int site, const float *X, int T, int K,
                                 int *rc, char *err) {
    *rc = 0;
    if (r->collect) {
        double *ss = r->collect->sumsq[layer * AE_NSITES + site];
        for (int t = 0; t < T; t++) {
            const float *xr = X + (size_t)t * K;
            for (int k = 0; k < K; k++) ss[k] += (double)xr[k] * xr[k];
        }
    }
    if (!r->quant_x) return X;
    const int32_t *perm = r->perm ? r->perm[layer * AE_NSITES + site] : NULL;
    char what[96];
    snprintf(what, sizeof what, "layer %d %s activations", layer, site_names[site]);
    if (r->exact) {
        if (r->has_qx) { aq_qtensor_free(&r->qx); r->has_qx = 0; }
        if (aq_f32_to_f16_checked(X, r->x16, (size_t)T * K, what, err) ||
            aq_quantize_x(&r->opts.mode, r->x16, T, K, perm, &r->qx, err)) {
            *rc = -1;
            return NULL;
        }
        r->has_qx = 1;
        return X;
    }
    fq_ctx *c = calloc(1, sizeof *c);
    if (!c) { SETERR("out of memory"); *rc = -1; return NULL; }
    c->mode = &r->opts.mode; c->src = X; c->dst = r->xq; c->K = K; c->perm = perm; c->what = what;
    ae_parallel_for(r->opts.nthreads, T, 16, fq_range, c);
    for (int i = 0; i < 64; i++)
        if (c->bad[i]) {
            SETERR("%s", c->errs[i]);
            free(c);
            *rc = -1;
            return NULL;
        }
    free(c);
    return r->xq;
}

/* Y [T, N] (row stride ldy) = X·Wᵀ for projection ln; X is the operand site_prepare returned. */
static int linear(ae_runner *r, const ae_lin *ln, const float *X, int T, float *Y, int ldy,
                  char *err) {
    if (r->exact) {
        if (aq_gemm(&r->qx, &ln->q, 1, r->y16, r->opts.nthreads, err)) return -1;
        for (int t = 0; t < T; t++)
            for (int n = 0; n < ln->N; n++)
                Y[(size_t)t * ldy + n] = aq_f16_to_f32(r->y16[(size_t)t * ln->N + n]);
        return 0;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, ln->N, ln->K, 1.0f, X, ln->K, ln->w,
                ln->K, 0.0f, Y, ldy);
    return 0;
}

static void rope_rows(float *v, int ld, int T, int pos, int nheads, int hd, const float *cosv,
                      const float *sinv) {
    int half = hd / 2;
    for (int t = 0; t < T; t++) {
        const float *cr = cosv + (size_t)(pos + t) * half, *sr = sinv + (size_t)(pos + t) * half;
        for (int h = 0; h < nheads; h++) {
            float *x = v + (size_t)t * ld + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float x0 = x[i], x1 = x[i + half];
                x[i] = x0 * cr[i] - x1 * sr[i];
                x[i + half] = x1 * cr[i] + x0 * sr[i];
            }
        }
    }
}

typedef struct {
    float *S;       /* (nheads * nb, L): head h's rows at h * nb                                   */
    int L, nb, row0;/* row i of a head is absolute position row0 + i                             */
} sm_ctx;

/* Causal softmax over rows: row r (head r / nb, absolute position p = row0 + r % nb) keeps columns
 * 0..p (expf of the max-shifted scores, fp32 sum), the rest become 0. */
static void softmax_range(void *vctx, long a, long b, int tid) {
    (void)tid;
    sm_ctx *c = vctx;
    for (long r = a; r < b; r++) {
        float *s = c->S + (size_t)r * c->L;
        int n = c->row0 + (int)(r % c->nb) + 1;
        float mx = s[0];
        for (int j = 1; j < n; j++) if (s[j] > mx) mx = s[j];
        ae_exp_shifted(s, mx, s, n);
        float sum = 0;
        for (int j = 0; j < n; j++) sum += s[j];
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) s[j] *= inv;
        for (int j = n; j < c->L; j++) s[j] = 0;
    }
}

/* Attention of T new rows (positions pos..pos+T-1) for one layer: q [T, q_dim] against the cache
 * (kc, vc: (max_seq, kv_dim), rows 0..pos+T-1 filled); output o [T, q_dim]. Rows go in blocks of
 * r->rowblock; per block: scores of every head (sgemm, scaled by 1/√hd), one parallel causal softmax
 * over all heads' rows, then P·V per head (sgemm). Query head h reads KV head h / (n_heads/n_kv). */
static void attention(ae_runner *r, const float *q, const float *kc, const float *vc, float *o,
                      int T, int pos) {
    const ae_config *c = &r->m->cfg;
    int hd = c->head_dim, grp = c->n_heads / c->n_kv_heads, nh = c->n_heads;
    float scale = 1.0f / sqrtf((float)hd);
    for (int t0 = 0; t0 < T; t0 += r->rowblock) {
        int nb = T - t0 < r->rowblock ? T - t0 : r->rowblock;
        int L = pos + t0 + nb;  /* keys needed by the last row of the block */
        for (int h = 0; h < nh; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, L, hd, scale,
                        q + (size_t)t0 * r->q_dim + (size_t)h * hd, r->q_dim,
                        kc + (size_t)(h / grp) * hd, r->kv_dim, 0.0f,
                        r->scores + (size_t)h * nb * L, L);
        sm_ctx sc = {r->scores, L, nb, pos + t0};
        ae_parallel_for(r->opts.nthreads, (long)nh * nb, 16, softmax_range, &sc);
        for (int h = 0; h < nh; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, hd, L, 1.0f,
                        r->scores + (size_t)h * nb * L, L, vc + (size_t)(h / grp) * hd, r->kv_dim, 0.0f,
                        o + (size_t)t0 * r->q_dim + (size_t)h * hd, r->q_dim);
    }
}

int ae_forward(ae_runner *r, const int *tokens, int T, int pos, int logits_from, float *logits,
               char *err) {
    const ae_model *m = r->m;
    const ae_config *c = &m->cfg;
    if (T < 1) { SETERR("ae_forward: T = %d < 1", T); return -1; }
    if (pos != r->pos) {
        SETERR("ae_forward: pos %d but the KV cache holds %d positions (ae_runner_truncate first)", pos, r->pos);
        return -1;
    }
    if ((long)pos + T > r->opts.max_seq) {
        SETERR("ae_forward: positions %d..%d exceed the runner's max_seq %d", pos, pos + T - 1, r->opts.max_seq);
        return -1;
    }
    if (logits_from < 0 || logits_from > T) { SETERR("ae_forward: logits_from %d not in [0, %d]", logits_from, T); return -1; }
    if (logits_from < T && !logits) { SETERR("ae_forward: logits is NULL"); return -1; }
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size) {
            SETERR("ae_forward: token %d at index %d is outside the vocabulary [0, %d)", tokens[t], t, c->vocab_size);
            return -1;
        }
    int dim = c->dim, hid = c->hidden_dim, hd = c->head_dim;
    size_t S = (size_t)r->opts.max_seq;
    float *x = r->x, *xb = r->xb;
    for (int t = 0; t < T; t++)   /* embedding rows, read from the model one token at a time */
        if (ae_model_read_f32(m, -1, AE_T_EMB, (size_t)tokens[t], 1, x + (size_t)t * dim, err)) return -1;
    int rc = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const float *attn_norm = r->attn_norm + (size_t)l * dim, *ffn_norm = r->ffn_norm + (size_t)l * dim;
        ae_lin *lin = r->lin[l];
        float *kc = r->kcache + (size_t)l * S * r->kv_dim, *vc = r->vcache + (size_t)l * S * r->kv_dim;
        float *knew = kc + (size_t)pos * r->kv_dim, *vnew = vc + (size_t)pos * r->kv_dim;

        /* attention block */
        rmsnorm_rows(xb, x, attn_norm, T, dim, c->rms_eps);
        const float *xin = site_prepare(r, l, AE_SITE_ATTN_IN, xb, T, dim, &rc, err);
        if (rc) return -1;
        if (linear(r, &lin[L_Q], xin, T, r->q, r->q_dim, err) ||
            linear(r, &lin[L_K], xin, T, knew, r->kv_dim, err) ||
            linear(r, &lin[L_V], xin, T, vnew, r->kv_dim, err))
            return -1;
        rope_rows(r->q, r->q_dim, T, pos, c->n_heads, hd, r->rope_cos, r->rope_sin);
        rope_rows(knew, r->kv_dim, T, pos, c->n_kv_heads, hd, r->rope_cos, r->rope_sin);
        if (r->opts.kv4)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < c->n_kv_heads; h++) {
                    aq_kv4_fakequant(knew + (size_t)t * r->kv_dim + (size_t)h * hd, hd);
                    aq_kv4_fakequant(vnew + (size_t)t * r->kv_dim + (size_t)h * hd, hd);
                }
        attention(r, r->q, kc, vc, xb, T, pos);
        xin = site_prepare(r, l, AE_SITE_ATTN_OUT, xb, T, r->q_dim, &rc, err);
        if (rc) return -1;
        if (linear(r, &lin[L_O], xin, T, r->hb, dim, err)) return -1;
        for (size_t i = 0; i < (size_t)T * dim; i++) x[i] += r->hb[i];

        /* MLP block (SwiGLU) */
        rmsnorm_rows(xb, x, ffn_norm, T, dim, c->rms_eps);
        xin = site_prepare(r, l, AE_SITE_MLP_IN, xb, T, dim, &rc, err);
        if (rc) return -1;
        if (linear(r, &lin[L_GATE], xin, T, r->hb, hid, err) ||
            linear(r, &lin[L_UP], xin, T, r->hb2, hid, err))
            return -1;
        for (size_t i = 0; i < (size_t)T * hid; i++) {
            float g = r->hb[i];
            r->hb[i] = g / (1.0f + expf(-g)) * r->hb2[i];
        }
        xin = site_prepare(r, l, AE_SITE_MLP_OUT, r->hb, T, hid, &rc, err);
        if (rc) return -1;
        if (linear(r, &lin[L_DOWN], xin, T, xb, dim, err)) return -1;
        for (size_t i = 0; i < (size_t)T * dim; i++) x[i] += xb[i];
    }
    if (r->has_qx) { aq_qtensor_free(&r->qx); r->has_qx = 0; }
    r->pos = pos + T;
    int nl = T - logits_from;
    if (nl > 0) {
        rmsnorm_rows(xb, x + (size_t)logits_from * dim, r->final_norm, nl, dim, c->rms_eps);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nl, c->vocab_size, dim, 1.0f, xb, dim,
                    r->lm_head, dim, 0.0f, logits, c->vocab_size);
    }
    return 0;
}

/* ---- greedy generation ------------------------------------------------------------------------ */

int ae_generate(ae_runner *r, const int *prompt, int n_prompt, int n_new, const int *stop,
                int n_stop, int *out, int *n_out, ae_token_cb on_token, void *ctx, char *err) {
    *n_out = 0;
    if (n_prompt < 1) { SETERR("ae_generate: empty prompt (give at least BOS)"); return -1; }
    if (n_prompt > r->opts.max_seq) {
        SETERR("ae_generate: prompt of %d tokens exceeds max_seq %d", n_prompt, r->opts.max_seq);
        return -1;
    }
    int V = r->m->cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof(float));
    int *seq = malloc(((size_t)n_prompt + (size_t)(n_new > 0 ? n_new : 0) + 1) * sizeof(int));
    if (!logits || !seq) { free(logits); free(seq); SETERR("out of memory"); return -1; }
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int));
    ae_runner_truncate(r, 0);
    int n = n_prompt, rc = 0;
    /* the prompt in one batch, logits for its last position only */
    if (n_new > 0 && ae_forward(r, seq, n_prompt, 0, n_prompt - 1, logits, err)) rc = -1;
    while (!rc && *n_out < n_new) {
        int best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        if (!isfinite(logits[best])) { SETERR("ae_generate: non-finite logits at position %d", n - 1); rc = -1; break; }
        int is_stop = 0;
        for (int s = 0; s < n_stop; s++) if (stop[s] == best) is_stop = 1;
        if (is_stop) break;
        seq[n++] = best;
        out[(*n_out)++] = best;
        if (on_token) on_token(ctx, seq, n);
        if (*n_out >= n_new || n >= r->opts.max_seq) break;
        if (ae_forward(r, &seq[n - 1], 1, n - 1, 0, logits, err)) rc = -1;
    }
    free(logits);
    free(seq);
    return rc;
}

/* ---- calibration hook ----------------------------------------------------------------------- */

void ae_runner_collect(ae_runner *r, ae_calib *c) { r->collect = c; }
