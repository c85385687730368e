/* ppl.c — perplexity, KL divergence and top-1 agreement per mode (see ppl.h). */
#include "ppl.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "tokenizer.h"
#include "wikitext.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define SETERR(...) ax_seterr(err, __VA_ARGS__)

#define PPL_PROTOCOL                                                                               \
    "GPTQ/Atom/QuaRot: test rows joined with \"\\n\\n\", tokenized once with BOS at the start; "   \
    "numel // seqlen non-overlapping windows, each from position 0; positions 1..seqlen-1 scored " \
    "(seqlen-1 predictions per window); ppl = exp(mean NLL). KLD/top-1 as llama.cpp "             \
    "--kl-divergence: KL(P_fp16 || Q_mode) per token over the full vocabulary, mean and standard " \
    "error; top-1 = share of tokens whose argmax equals FP16's"

/* ---- scoring primitives --------------------------------------------------------------------- */

/* max and first argmax of l [V] */
static float max_arg(const float *l, int V, int *arg) {
    float mx = l[0];
    int b = 0;
    for (int i = 1; i < V; i++) if (l[i] > mx) { mx = l[i]; b = i; }
    *arg = b;
    return mx;
}

/* log Σ exp(l_v − mx) + mx: exponentials by ae_exp_shifted (chunked through a stack buffer),
 * summed in double in index order. */
static double lse_from(const float *l, int V, float mx) {
    double s = 0;
    float buf[1024];
    for (int i0 = 0; i0 < V; i0 += 1024) {
        int n = V - i0 < 1024 ? V - i0 : 1024;
        ae_exp_shifted(l + i0, mx, buf, n);
        for (int i = 0; i < n; i++) s += (double)buf[i];
    }
    return (double)mx + log(s);
}

double ae_logsumexp(const float *l, int V) {
    int a;
    float mx = max_arg(l, V, &a);
    return lse_from(l, V, mx);
}

/* Σ_v p_v·(a_v − b_v) with the product in fp32 and 8 double accumulators (lane v mod 8), combined
 * in lane order: the AVX2 path and the scalar path do the same operations, so the same bits. */
static double dot_diff(const float *p, const float *a, const float *b, int V) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
#if defined(__AVX2__)
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (; i + 8 <= V; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_loadu_ps(p + i), _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(d)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1)));
    }
    _mm256_storeu_pd(acc, lo);
    _mm256_storeu_pd(acc + 4, hi);
#endif
    for (; i < V; i++) {
        float d = p[i] * (a[i] - b[i]);
        acc[i % 8] += (double)d;
    }
    double s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    return s;
}

/* KL(P||Q) = Σ p_v (log p_v − log q_v) with log p_v = a_v − lse_a, log q_v = b_v − lse_b
 *          = Σ p_v (a_v − b_v) + (lse_b − lse_a) Σ p_v.
 * Identical logits give a_v − b_v = 0 and lse_b = lse_a: exactly 0. */
void ae_score_row(const float *ref_logits, double ref_lse, double ref_psum, const float *ref_p,
                  int ref_argmax, const float *logits, int V, int target, double *nll, double *kld,
                  int *same) {
    int am;
    float mx = max_arg(logits, V, &am);
    double lse = lse_from(logits, V, mx);
    *nll = lse - (double)logits[target];
    *kld = dot_diff(ref_p, ref_logits, logits, V) + (lse - ref_lse) * ref_psum;
    *same = am == ref_argmax;
}

/* ---- the evaluation -------------------------------------------------------------------------- */

typedef struct {
    int V;
    const float *logits;  /* (T, V) reference logits                                  */
    double *lse;          /* (T-1) log Σ exp                                          */
    double *psum;         /* (T-1) Σ p_v (1 up to rounding)                           */
    float *p;             /* (T-1, V) p_v = exp((float)(l_v − lse))                   */
    int *amax;            /* (T-1)                                                    */
} ref_ctx;

static void ref_rows(void *vc, long a, long b, int tid) {
    (void)tid;
    ref_ctx *c = vc;
    for (long t = a; t < b; t++) {
        const float *l = c->logits + (size_t)t * c->V;
        float *p = c->p + (size_t)t * c->V;
        float mx = max_arg(l, c->V, &c->amax[t]);
        double lse = lse_from(l, c->V, mx);
        c->lse[t] = lse;
        for (int i = 0; i < c->V; i++) p[i] = (float)((double)l[i] - lse);
        ae_exp_shifted(p, 0.0f, p, c->V);
        double ps = 0;
        for (int i = 0; i < c->V; i++) ps += (double)p[i];
        c->psum[t] = ps;
    }
}

typedef struct {
    int V;
    const ref_ctx *ref;
    const float *logits;  /* (T, V) mode logits                                        */
    const int *tokens;    /* (T) window                                                */
    double *nll, *kld;    /* (T-1)                                                     */
    int *same;            /* (T-1)                                                     */
} score_ctx;

static void score_rows(void *vc, long a, long b, int tid) {
    (void)tid;
    score_ctx *c = vc;
    for (long t = a; t < b; t++)
        ae_score_row(c->ref->logits + (size_t)t * c->V, c->ref->lse[t], c->ref->psum[t],
                     c->ref->p + (size_t)t * c->V, c->ref->amax[t], c->logits + (size_t)t * c->V, c->V, c->tokens[t + 1],
                     &c->nll[t], &c->kld[t], &c->same[t]);
}

/* The scored rows 0..T-2 of one window's logits (T, V) must be finite: -1 with err naming the mode,
 * the window (0-based, of nw), the position, the token id and the value. */
int ae_ppl_check_logits(const float *logits, int T, int V, const char *mode, long w, long nw, const char *model,
                        char *err) {
    for (int t = 0; t < T - 1; t++) {
        const float *row = logits + (size_t)t * V;
        for (int v = 0; v < V; v++)
            if (!isfinite(row[v])) {
                SETERR("mode %s, window %ld of %ld (0-based), position %d: non-finite logits (lm_head output): "
                       "the logit of token id %d is %s (model %s)", mode, w, nw, t, v, isnan(row[v]) ? "NaN" : "inf",
                       model);
                return -1;
            }
    }
    return 0;
}

typedef struct {
    double s_nll, s_nll2, s_kld, s_kld2, kld_max;
    long n, n_same;
} acc_t;

void ae_ppl_result_free(ae_ppl_result *res) {
    if (!res) return;
    free(res->modes);
    res->modes = NULL;
    res->n_modes = 0;
}

static void acc_add(acc_t *a, const double *nll, const double *kld, const int *same, int n) {
    for (int t = 0; t < n; t++) {  /* in order: the same sums on every backend and schedule */
        a->s_nll += nll[t];
        a->s_nll2 += nll[t] * nll[t];
        double k = kld ? kld[t] : 0.0;
        a->s_kld += k;
        a->s_kld2 += k * k;
        if (k > a->kld_max) a->kld_max = k;
        a->n_same += same ? same[t] : 1;
        a->n++;
    }
}

/* Mean NLL, ppl, KLD and top-1 with their standard errors from the sums. */
static void acc_finish(const acc_t *a, ae_ppl_mode_result *r) {
    double n = (double)a->n;
    r->n = a->n;
    r->nll = a->s_nll / n;
    r->ppl = exp(r->nll);
    r->nll_stderr = n > 1 ? sqrt(fmax(a->s_nll2 / n - r->nll * r->nll, 0) / (n - 1)) : 0;
    r->kld = a->s_kld / n;
    r->kld_stderr = n > 1 ? sqrt(fmax(a->s_kld2 / n - r->kld * r->kld, 0) / (n - 1)) : 0;
    r->kld_max = a->kld_max;
    r->top1 = (double)a->n_same / n;
    r->top1_stderr = n > 1 ? sqrt(r->top1 * (1 - r->top1) / (n - 1)) : 0;
}

/* The device schedule (ppl.h ae_ppl_opts.device): the FP16 reference over every window first, its
 * log-probs kept once in an ae_refstore; then each mode alone, scored against the store. Modes'
 * accumulators see the same (window, position) order as the cpu schedule. */
static int eval_ppl_stored(const ae_model *m, const int *tokens, long nw, const ae_ppl_opts *o,
                           ae_ppl_result *res, char *err) {
    const int T = o->seqlen;
    int rc = -1;
    ae_engine *eng = NULL;
    ae_refstore *rs = NULL;
    acc_t *acc = calloc((size_t)o->n_modes, sizeof *acc);
    int *reuse = calloc((size_t)o->n_modes, sizeof *reuse);
    double *nll = malloc((size_t)T * sizeof(double)), *kld = malloc((size_t)T * sizeof(double));
    int *same = malloc((size_t)T * sizeof(int));
    double ref_s_nll = 0;
    ax_progress pg;
    char label[96] = "ppl";
    if (!acc || !reuse || !nll || !kld || !same) { SETERR("out of memory"); goto done; }
    ae_engine_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.device = o->device;
    if (aq_mode_parse("fp16", &ro.mode, err)) goto done;
    ro.gemm = AE_GEMM_FAKE;
    ro.nthreads = o->nthreads;
    ro.max_seq = T;
    int n_forward = 1;
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        r->mode = o->modes[k];
        if (ae_mode_check(m, &o->modes[k], r->note)) { r->applicable = 0; continue; }
        r->applicable = 1;
        if (aq_mode_is_fp16(&o->modes[k]) && !o->kv4) reuse[k] = 1;
        else n_forward++;
    }
    if (o->progress) ax_progress_start(&pg, label, nw * n_forward * (long)T, "tok");
    double t0 = ax_now();
    if (ae_engine_new(m, &ro, NULL, &eng, err)) goto done;
    double ref_build = ax_now() - t0;
    ae_engine_describe(eng, res->backend, sizeof res->backend);
    if (ae_refstore_new(eng, (int)nw, T, &rs, err)) goto done;
    res->ref_store_gib = (double)nw * (T - 1) * m->cfg.vocab_size * 4.0 / 1073741824.0;
    for (long w = 0; w < nw; w++) {
        const int *tw = tokens + (size_t)w * T;
        snprintf(label, sizeof label, "ppl fp16 (reference) window %ld/%ld", w + 1, nw);
        char e2[AX_ERR_LEN];
        if (ae_engine_score_window(eng, tw, T, rs, w, 1, nll, NULL, NULL, e2)) {
            SETERR("mode fp16 (reference), window %ld of %ld: %s", w, nw, e2);
            goto done;
        }
        for (int t = 0; t < T - 1; t++) ref_s_nll += nll[t];
        for (int k = 0; k < o->n_modes; k++)
            if (res->modes[k].applicable && reuse[k]) acc_add(&acc[k], nll, NULL, NULL, T - 1);
        if (o->progress) ax_progress_update(&pg, (w + 1) * (long)T);
    }
    res->ref_seconds = ax_now() - t0;
    double ref_peak = (double)ae_engine_peak_bytes(eng);
    ae_engine_free(eng);
    eng = NULL;
    int done_modes = 1;
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        if (!r->applicable) continue;
        if (reuse[k]) {
            r->seconds = res->ref_seconds;
            r->build_seconds = ref_build;
            r->window_seconds = (r->seconds - ref_build) / (double)nw;
            r->peak_gib = ref_peak / 1073741824.0;
            continue;
        }
        double t1 = ax_now();
        ae_engine_opts mo = ro;
        mo.mode = o->modes[k];
        mo.gemm = o->gemm;
        mo.kv4 = o->kv4;
        char e2[AX_ERR_LEN];
        if (ae_engine_new(m, &mo, o->calib, &eng, e2)) { SETERR("mode %s: %s", o->modes[k].name, e2); goto done; }
        r->build_seconds = ax_now() - t1;
        for (long w = 0; w < nw; w++) {
            const int *tw = tokens + (size_t)w * T;
            snprintf(label, sizeof label, "ppl %s window %ld/%ld", o->modes[k].name, w + 1, nw);
            if (ae_engine_score_window(eng, tw, T, rs, w, 0, nll, kld, same, e2)) {
                SETERR("mode %s, window %ld of %ld: %s", o->modes[k].name, w, nw, e2);
                goto done;
            }
            for (int t = 0; t < T - 1; t++)
                if (!isfinite(nll[t]) || !isfinite(kld[t])) {
                    SETERR("mode %s, window %ld of %ld, position %d: non-finite NLL or KL divergence "
                           "(lm_head output)", o->modes[k].name, w, nw, t);
                    goto done;
                }
            acc_add(&acc[k], nll, kld, same, T - 1);
            if (o->progress) ax_progress_update(&pg, (done_modes * nw + w + 1) * (long)T);
        }
        r->peak_gib = (double)ae_engine_peak_bytes(eng) / 1073741824.0;
        ae_engine_free(eng);
        eng = NULL;
        r->seconds = ax_now() - t1;
        r->window_seconds = (r->seconds - r->build_seconds) / (double)nw;
        done_modes++;
    }
    if (o->progress) ax_progress_end(&pg, nw * n_forward * (long)T);
    res->forward_tokens = nw * n_forward * (long)T;
    res->ref_nll = ref_s_nll / (double)res->scored;
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        if (!r->applicable) continue;
        acc_finish(&acc[k], r);
    }
    rc = 0;
done:
    ae_engine_free(eng);
    ae_refstore_free(rs);
    free(acc); free(reuse); free(nll); free(kld); free(same);
    return rc;
}

int ae_eval_ppl(const ae_model *m, const int *tokens, size_t n_tokens, const ae_ppl_opts *o,
                ae_ppl_result *res, char *err) {
    memset(res, 0, sizeof *res);
    const ae_config *cfg = &m->cfg;
    int T = o->seqlen, V = cfg->vocab_size;
    double t_start = ax_now();
    if (T < 2 || T > cfg->max_pos) {
        SETERR("seqlen %d outside [2, %d] (max_position_embeddings of %s)", T, cfg->max_pos, m->dir);
        return -1;
    }
    long nw = (long)(n_tokens / (size_t)T);
    if (o->max_windows > 0 && nw > o->max_windows) nw = o->max_windows;
    if (nw < 1) {
        SETERR("the token stream has %zu tokens, fewer than one window of %d", n_tokens, T);
        return -1;
    }
    if (o->n_modes < 1) { SETERR("no modes to evaluate"); return -1; }
    for (size_t i = 0; i < (size_t)nw * T; i++)
        if (tokens[i] < 0 || tokens[i] >= V) {
            SETERR("token %d at index %zu is outside the vocabulary [0, %d) of %s", tokens[i], i, V, m->dir);
            return -1;
        }
    size_t tvb;
    if (ax_mul3_size((size_t)T, (size_t)V, sizeof(float), &tvb, "seqlen x vocab_size logits", err)) return -1;
    res->seqlen = T;
    res->windows = (int)nw;
    res->stream_tokens = (long)n_tokens;
    res->scored = nw * (T - 1);
    res->n_modes = o->n_modes;
    res->modes = calloc((size_t)o->n_modes, sizeof *res->modes);
    if (o->device == AE_DEV_CUDA) {
        int rc2 = eval_ppl_stored(m, tokens, nw, o, res, err);
        res->seconds = ax_now() - t_start;
        if (rc2) ae_ppl_result_free(res);
        return rc2;
    }
    ae_engine **run = calloc((size_t)o->n_modes, sizeof *run);
    int *reuse = calloc((size_t)o->n_modes, sizeof *reuse);
    acc_t *acc = calloc((size_t)o->n_modes, sizeof *acc);
    size_t TV = (size_t)T * V;
    float *ref_logits = malloc(TV * sizeof(float)), *ref_p = malloc(TV * sizeof(float));
    float *logits = malloc(TV * sizeof(float));
    double *ref_lse = malloc((size_t)T * sizeof(double)), *nll = malloc((size_t)T * sizeof(double));
    double *ref_psum = malloc((size_t)T * sizeof(double));
    double *kld = malloc((size_t)T * sizeof(double));
    int *amax = malloc((size_t)T * sizeof(int)), *same = malloc((size_t)T * sizeof(int));
    ae_engine *ref = NULL;
    int rc = -1;
    double ref_s_nll = 0;
    if (!res->modes || !run || !reuse || !acc || !ref_logits || !ref_p || !logits || !ref_lse || !nll ||
        !kld || !amax || !same || !ref_psum) {
        SETERR("out of memory (seqlen %d x vocab %d logits buffers)", T, V);
        goto done;
    }
    ae_engine_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.device = AE_DEV_CPU;
    if (aq_mode_parse("fp16", &ro.mode, err)) goto done;
    ro.gemm = AE_GEMM_FAKE;
    ro.nthreads = o->nthreads;
    ro.max_seq = T;
    if (ae_engine_new(m, &ro, NULL, &ref, err)) goto done;
    ae_engine_describe(ref, res->backend, sizeof res->backend);
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        r->mode = o->modes[k];
        if (ae_mode_check(m, &o->modes[k], r->note)) { r->applicable = 0; continue; }
        r->applicable = 1;
        /* fp16 without kv4 is the reference itself: score its logits (KLD exactly 0 by construction
         * of ae_score_row, which recomputes both log-distributions the same way) */
        if (aq_mode_is_fp16(&o->modes[k]) && !o->kv4) { reuse[k] = 1; continue; }
        ae_engine_opts mo = ro;
        mo.mode = o->modes[k];
        mo.gemm = o->gemm;
        mo.kv4 = o->kv4;
        char e2[AX_ERR_LEN];
        if (ae_engine_new(m, &mo, o->calib, &run[k], e2)) {
            SETERR("mode %s: %s", o->modes[k].name, e2);
            goto done;
        }
    }
    int n_forward = 1;
    for (int k = 0; k < o->n_modes; k++) n_forward += run[k] != NULL;
    ax_progress pg;
    char label[64] = "ppl";  /* "ppl window w/W": the bar counts forward tokens (tok/s, ETA) */
    if (o->progress) ax_progress_start(&pg, label, nw * n_forward * (long)T, "tok");
    ref_ctx rctx = {V, ref_logits, ref_lse, ref_psum, ref_p, amax};
    for (long w = 0; w < nw; w++) {
        const int *tw = tokens + (size_t)w * T;
        snprintf(label, sizeof label, "ppl window %ld/%ld", w + 1, nw);
        double t0 = ax_now();
        ae_engine_truncate(ref, 0);
        if (ae_engine_forward(ref, tw, T, 0, 0, ref_logits, err)) goto done;
        ae_parallel_for(o->nthreads, T - 1, 4, ref_rows, &rctx);
        if (ae_ppl_check_logits(ref_logits, T, V, "fp16 (reference)", w, nw, m->dir, err)) goto done;
        for (int t = 0; t < T - 1; t++)  /* finite logits give a finite lse: a guard, not expected */
            if (!isfinite(ref_lse[t]) || !isfinite(ref_psum[t])) {
                SETERR("mode fp16 (reference), window %ld of %ld, position %d: log-sum-exp of the logits "
                       "(lm_head output) is not finite", w, nw, t);
                goto done;
            }
        for (int t = 0; t < T - 1; t++) ref_s_nll += ref_lse[t] - (double)ref_logits[(size_t)t * V + tw[t + 1]];
        res->ref_seconds += ax_now() - t0;
        if (o->progress) ax_progress_update(&pg, (w * n_forward + 1) * (long)T);
        int done_fw = 1;
        for (int k = 0; k < o->n_modes; k++) {
            if (!res->modes[k].applicable) continue;
            double t1 = ax_now();
            const float *lg = ref_logits;
            if (!reuse[k]) {
                ae_engine_truncate(run[k], 0);
                char e2[AX_ERR_LEN];
                if (ae_engine_forward(run[k], tw, T, 0, 0, logits, e2)) {
                    SETERR("mode %s, window %ld: %s", o->modes[k].name, w, e2);
                    goto done;
                }
                lg = logits;
                if (ae_ppl_check_logits(logits, T, V, o->modes[k].name, w, nw, m->dir, err)) goto done;
            }
            score_ctx sc = {V, &rctx, lg, tw, nll, kld, same};
            ae_parallel_for(o->nthreads, T - 1, 4, score_rows, &sc);
            acc_t *a = &acc[k];
            for (int t = 0; t < T - 1; t++)
                if (!isfinite(nll[t]) || !isfinite(kld[t])) {
                    SETERR("mode %s, window %ld of %ld, position %d: non-finite NLL or KL divergence from "
                           "finite logits (lm_head output)", o->modes[k].name, w, nw, t);
                    goto done;
                }
            acc_add(a, nll, kld, same, T - 1);
            res->modes[k].seconds += ax_now() - t1;
            if (!reuse[k]) done_fw++;
            if (o->progress) ax_progress_update(&pg, (w * n_forward + done_fw) * (long)T);
        }
    }
    if (o->progress) ax_progress_end(&pg, nw * n_forward * (long)T);
    res->forward_tokens = nw * n_forward * (long)T;
    res->ref_nll = ref_s_nll / (double)res->scored;
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        if (!r->applicable) continue;
        if (reuse[k]) r->seconds += res->ref_seconds;
        acc_finish(&acc[k], r);
    }
    rc = 0;
done:
    if (run)
        for (int k = 0; k < o->n_modes; k++) ae_engine_free(run[k]);
    ae_engine_free(ref);
    free(run); free(reuse); free(acc);
    free(ref_logits); free(ref_p); free(logits); free(ref_lse); free(ref_psum); free(nll); free(kld);
    free(amax); free(same);
    res->seconds = ax_now() - t_start;
    if (rc) ae_ppl_result_free(res);
    return rc;
}

/* ---- table and JSON ------------------------------------------------------------------------ */

void ae_ppl_print_table(FILE *f, const ae_ppl_result *res) {
    fprintf(f, "%-18s %10s %9s %8s %20s %17s %8s\n", "mode", "ppl", "dppl", "NLL", "KLD (+- se)",
            "top-1 % (+- se)", "s");
    double ref_ppl = exp(res->ref_nll);
    for (int k = 0; k < res->n_modes; k++) {
        const ae_ppl_mode_result *r = &res->modes[k];
        if (!r->applicable) {
            fprintf(f, "%-18s %10s   n/a: %s\n", r->mode.name, "-", r->note);
            continue;
        }
        fprintf(f, "%-18s %10.4f %+9.4f %8.5f %11.6f +- %.6f %8.3f +- %.3f %8.1f\n", r->mode.name, r->ppl,
                r->ppl - ref_ppl, r->nll, r->kld, r->kld_stderr, 100 * r->top1, 100 * r->top1_stderr,
                r->seconds);
    }
}

static cJSON *result_json(const ae_ppl_result *res) {
    cJSON *arr = cJSON_CreateArray();
    for (int k = 0; k < res->n_modes; k++) {
        const ae_ppl_mode_result *r = &res->modes[k];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "mode", r->mode.name);
        cJSON_AddBoolToObject(o, "applicable", r->applicable);
        if (!r->applicable) {
            cJSON_AddStringToObject(o, "reason", r->note);
        } else {
            cJSON_AddNumberToObject(o, "ppl", r->ppl);
            cJSON_AddNumberToObject(o, "nll", r->nll);
            cJSON_AddNumberToObject(o, "nll_stderr", r->nll_stderr);
            cJSON_AddNumberToObject(o, "kld", r->kld);
            cJSON_AddNumberToObject(o, "kld_stderr", r->kld_stderr);
            cJSON_AddNumberToObject(o, "kld_max", r->kld_max);
            cJSON_AddNumberToObject(o, "top1_agreement", r->top1);
            cJSON_AddNumberToObject(o, "top1_agreement_stderr", r->top1_stderr);
            cJSON_AddNumberToObject(o, "predictions", (double)r->n);
            cJSON_AddNumberToObject(o, "seconds", r->seconds);
            if (r->peak_gib > 0) cJSON_AddNumberToObject(o, "peak_device_gib", r->peak_gib);
            if (r->window_seconds > 0) {
                cJSON_AddNumberToObject(o, "build_seconds", r->build_seconds);
                cJSON_AddNumberToObject(o, "seconds_per_window", r->window_seconds);
            }
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

/* ---- the job -------------------------------------------------------------------------------- */

#include "job.h"  /* the job policy shared with eval zeroshot and generate */

static int parse_modes(const char *list, aq_mode **out, int *n, char *err) {
    *out = NULL;
    *n = 0;
    if (!list || !*list || !strcmp(list, "standard") || !strcmp(list, "all")) {
        int c = 0;
        while (aq_standard_modes[c]) c++;
        *out = calloc((size_t)c, sizeof **out);
        if (!*out) { SETERR("out of memory"); return -1; }
        for (int i = 0; i < c; i++)
            if (aq_mode_parse(aq_standard_modes[i], &(*out)[i], err)) { free(*out); *out = NULL; return -1; }
        *n = c;
        return 0;
    }
    int cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',';
    aq_mode *ms = calloc((size_t)cap, sizeof *ms);
    if (!ms) { SETERR("out of memory"); return -1; }
    const char *p = list;
    int c = 0;
    while (1) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[64];
        if (len == 0 || len >= sizeof name) {
            SETERR("--modes: empty or overlong mode name in '%s'", list);
            free(ms);
            return -1;
        }
        memcpy(name, p, len);
        name[len] = 0;
        char e2[AX_ERR_LEN];
        if (aq_mode_parse(name, &ms[c], e2)) { SETERR("--modes: %s", e2); free(ms); return -1; }
        for (int j = 0; j < c; j++)
            if (!strcmp(ms[j].name, ms[c].name)) { SETERR("--modes: '%s' listed twice", name); free(ms); return -1; }
        c++;
        if (!e) break;
        p = e + 1;
    }
    *out = ms;
    *n = c;
    return 0;
}

/* The evaluation as `apex4 eval ppl` runs it, through the job policy (eval/job.h): model and
 * tokenizer loading and checking, the Atom calibration (windows of min(2048, max_position_embeddings)
 * tokens whatever --seqlen is, so the cache is shared with eval zeroshot and generate) and the
 * results envelope. */
int ae_ppl_run_job(const ae_ppl_job *job, FILE *table, FILE *log, char *err) {
    int rc = -1;
    aq_mode *modes = NULL;
    int n_modes = 0;
    ae_job *jb = NULL;
    ad_text txt = {0};
    int *ids = NULL;
    size_t n_ids = 0;
    ae_ppl_result res = {0};
    cJSON *doc = NULL;
    double t0 = ax_now();

    /* everything that can be checked without work first: --out (else an unwritable path fails
     * after the whole evaluation), empty paths */
    if (job->out && ax_check_out_path(job->out, "--out", err)) return -1;
    if (job->tokenizer && !*job->tokenizer) { SETERR("--tokenizer: empty path"); return -1; }
    if (job->tokenizer && strlen(job->tokenizer) >= AX_PATH_LEN) { SETERR("--tokenizer: path too long"); return -1; }
    const char *dataset = job->dataset ? job->dataset : "wikitext2";
    if (strcmp(dataset, "wikitext2")) { SETERR("--dataset: unknown dataset '%s' (known: wikitext2)", dataset); return -1; }
    if (!job->model_dir) { SETERR("--model DIR is required"); return -1; }
    if (parse_modes(job->modes, &modes, &n_modes, err)) return -1;
    if (ad_wikitext_load("test", &txt, err)) goto done; /* before the model: fail fast */
    ae_job_opts jo;
    memset(&jo, 0, sizeof jo);
    jo.model_dir = job->model_dir;
    jo.tokenizer = job->tokenizer;
    jo.out = job->out;
    jo.calib_windows = job->calib_windows;
    jo.device = job->device;
    jo.gemm = job->gemm;
    jo.kv4 = job->kv4;
    jo.nthreads = job->nthreads;
    jo.log = log;
    if (ae_job_open(&jo, &jb, err)) goto done;
    const ae_model *m = jb->model;
    int seqlen = job->seqlen > 0 ? job->seqlen : 2048;
    if (seqlen > m->cfg.max_pos) {
        if (log) fprintf(log, "notice: seqlen %d capped to max_position_embeddings %d of %s\n", seqlen,
                         m->cfg.max_pos, job->model_dir);
        seqlen = m->cfg.max_pos;
    }
    double tt = ax_now();
    if (ae_tokenize(jb->tok, txt.text, txt.len, 1, &ids, &n_ids, err)) goto done;
    if (log) fprintf(log, "wikitext2 test: %s (sha256 %.16s...), %ld rows, %zu bytes -> %zu tokens (with BOS) in %.1f s; "
                          "%zu windows of %d\n", txt.path, txt.sha256, txt.rows, txt.len, n_ids, ax_now() - tt,
                     n_ids / (size_t)seqlen, seqlen);
    if (ae_job_calibrate(jb, modes, n_modes, err)) goto done;
    ae_ppl_opts o = {modes, n_modes, seqlen, job->max_windows, job->gemm, job->kv4, job->nthreads, jb->calib,
                     job->progress, job->device};
    if (ae_eval_ppl(m, ids, n_ids, &o, &res, err)) goto done;
    double wall = ax_now() - t0;
    if (table) {
        fprintf(table, "%s  wikitext2 test  seqlen %d  windows %d  predictions %ld  device %s  gemm %s%s\n",
                job->model_dir, res.seqlen, res.windows, res.scored, res.backend,
                job->gemm == AE_GEMM_EXACT ? "exact" : (job->device == AE_DEV_CUDA ? "fake-quant+cuBLAS" : "fake-quant+sgemm"),
                job->kv4 ? "  kv4" : "");
        ae_ppl_print_table(table, &res);
        for (int k = 0; k < res.n_modes; k++)
            if (res.modes[k].applicable && res.modes[k].window_seconds > 0)
                fprintf(table, "  %-18s engine build %.2f s, %.4f s per window (forward + scoring), peak device %.2f GiB\n",
                        res.modes[k].mode.name, res.modes[k].build_seconds, res.modes[k].window_seconds,
                        res.modes[k].peak_gib);
        fprintf(table, "FP16 reference ppl %.4f; evaluation %.1f s (%.0f tok/s over %ld forward tokens), total %.1f s\n",
                exp(res.ref_nll), res.seconds, (double)res.forward_tokens / (res.seconds > 0 ? res.seconds : 1),
                res.forward_tokens, wall);
        fflush(table);
    }
    if (job->out) {
        /* model, model_dir, model_dtype, tokenizer, device, backend, gpu, gemm, kv4, calibration */
        doc = ae_job_envelope(jb, "eval ppl", res.backend);
        if (!doc) { SETERR("%s: out of memory building the results", job->out); goto done; }
        cJSON_AddStringToObject(doc, "dataset", "wikitext2");
        cJSON_AddStringToObject(doc, "split", "test");
        cJSON_AddStringToObject(doc, "dataset_file", txt.path);
        cJSON_AddStringToObject(doc, "dataset_sha256", txt.sha256);
        cJSON_AddStringToObject(doc, "protocol", PPL_PROTOCOL);
        cJSON_AddNumberToObject(doc, "seqlen", res.seqlen);
        cJSON_AddNumberToObject(doc, "windows", res.windows);
        cJSON_AddNumberToObject(doc, "tokens", (double)res.scored);
        cJSON_AddNumberToObject(doc, "stream_tokens", (double)res.stream_tokens);
        if (job->device == AE_DEV_CUDA) cJSON_AddNumberToObject(doc, "reference_store_gib", res.ref_store_gib);
        cJSON_AddStringToObject(doc, "reference", "fp16: the checkpoint's values in fp32, fp32 compute, no KV quantization");
        cJSON_AddNumberToObject(doc, "reference_ppl", exp(res.ref_nll));
        cJSON_AddNumberToObject(doc, "reference_seconds", res.ref_seconds);
        cJSON_AddItemToObject(doc, "modes", result_json(&res));
        cJSON_AddNumberToObject(doc, "seconds", wall);
        if (ax_write_json(job->out, doc, err)) goto done;
        if (log) fprintf(log, "wrote %s\n", job->out);
    }
    rc = 0;
done:
    cJSON_Delete(doc);
    ae_ppl_result_free(&res);
    free(ids);
    ad_text_free(&txt);
    ae_job_close(jb);
    free(modes);
    return rc;
}
