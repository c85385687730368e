/* engine.c — the language-model interface and its cpu backend (see engine.h). The cuda backend is
 * eval/engine_cuda.c; both are rows of ae_backend (engine_internal.h). */
#include "engine_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ak.h"
#include "ax_util.h"
#include "ppl.h"

#define SETERR(...) ax_seterr(err, __VA_ARGS__)

int ae_device_parse(const char *s, const char *opt, ae_device *out, char *err) {
    if (!s || !strcmp(s, "cpu")) { *out = AE_DEV_CPU; return 0; }
    if (!strcmp(s, "auto")) { *out = ak_device_count() > 0 ? AE_DEV_CUDA : AE_DEV_CPU; return 0; }
    if (!strcmp(s, "cuda")) {
        if (ak_device_count() <= 0) {
            char why[256];
            ak_device_describe(why, sizeof why);
            SETERR("%s cuda: no usable CUDA device (%s)", opt, why);
            return -1;
        }
        *out = AE_DEV_CUDA;
        return 0;
    }
    SETERR("%s: expected cpu, cuda or auto, got '%.80s'", opt, s);
    return -1;
}

const char *ae_device_name(ae_device d) { return d == AE_DEV_CUDA ? "cuda" : "cpu"; }

int ae_gemm_parse(const char *s, const char *opt, ae_gemm_kind *out, char *err) {
    if (s && !strcmp(s, "fake")) { *out = AE_GEMM_FAKE; return 0; }
    if (s && !strcmp(s, "exact")) { *out = AE_GEMM_EXACT; return 0; }
    SETERR("%s: expected exact or fake, got '%.80s'", opt, s ? s : "");
    return -1;
}

const char *ae_gemm_name(ae_gemm_kind g) { return g == AE_GEMM_EXACT ? "exact" : "fake"; }

/* ---- cpu backend: eval/forward.c ------------------------------------------------------------- */

static int cpu_build(ae_engine *e, const ae_calib *calib, char *err) {
    ae_run_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.mode = e->o.mode;
    ro.gemm = e->o.gemm;
    ro.kv4 = e->o.kv4;
    ro.nthreads = e->o.nthreads;
    ro.max_seq = e->o.max_seq;
    return ae_runner_build(e->m, &ro, e->o.mode.needs_calib ? calib : NULL, &e->runner, err);
}

static void cpu_destroy(ae_engine *e) { ae_runner_free(e->runner); e->runner = NULL; }

static int cpu_forward(ae_engine *e, const int *tokens, int T, int pos, int logits_from, float *logits,
                       char *err) {
    return ae_forward(e->runner, tokens, T, pos, logits_from, logits, err);
}

static void cpu_truncate(ae_engine *e, int pos) { ae_runner_truncate(e->runner, pos); }

static int cpu_refstore_alloc(ae_engine *e, ae_refstore *rs, char *err) {
    size_t n;
    if (ax_mul3_size((size_t)rs->n_windows, (size_t)(rs->seqlen - 1), (size_t)rs->vocab, &n,
                     "reference log-probs", err))
        return -1;
    rs->host = malloc(n * sizeof(float));
    rs->argmax = malloc((size_t)rs->n_windows * (size_t)(rs->seqlen - 1) * sizeof(int));
    if (!rs->host || !rs->argmax) {
        SETERR("reference log-probs: out of memory (%zu bytes for %d windows x %d positions x vocab %d)",
               n * sizeof(float), rs->n_windows, rs->seqlen - 1, rs->vocab);
        return -1;
    }
    (void)e;
    return 0;
}

static void cpu_refstore_release(ae_refstore *rs) { free(rs->host); free(rs->argmax); }

static int cpu_score(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window, int store,
                     double *nll, double *kld, int *same, char *err) {
    const int V = e->m->cfg.vocab_size;
    float *lg = malloc((size_t)T * (size_t)V * sizeof(float));
    if (!lg) { SETERR("logits: out of memory (%d x %d)", T, V); return -1; }
    ae_runner_truncate(e->runner, 0);
    if (ae_forward(e->runner, tokens, T, 0, 0, lg, err)) { free(lg); return -1; }
    for (int t = 0; t < T - 1; t++) {
        const float *l = lg + (size_t)t * V;
        double lse = ae_logsumexp(l, V);
        if (!isfinite(lse)) {
            SETERR("mode %s: non-finite logits (lm_head output) in window %ld at position %d",
                   e->o.mode.name, window, t);
            free(lg);
            return -1;
        }
        nll[t] = lse - (double)l[tokens[t + 1]];
        int am = 0;
        for (int v = 1; v < V; v++) if (l[v] > l[am]) am = v;
        if (!rs) continue;
        float *lp = rs->host + ((size_t)window * (size_t)(T - 1) + (size_t)t) * (size_t)V;
        int *ram = rs->argmax + (size_t)window * (size_t)(T - 1) + (size_t)t;
        if (store) {
            for (int v = 0; v < V; v++) lp[v] = (float)((double)l[v] - lse);
            *ram = am;
        } else {
            double s = 0;
            for (int v = 0; v < V; v++) {
                double lq = (double)l[v] - lse;
                s += exp((double)lp[v]) * ((double)lp[v] - lq);
            }
            if (kld) kld[t] = s;
            if (same) same[t] = am == *ram;
        }
    }
    free(lg);
    return 0;
}

static void cpu_describe(const ae_engine *e, char *buf, size_t len) {
    snprintf(buf, len, "cpu (%d threads)", ae_runner_opts(e->runner)->nthreads);
}

/* Calibration: the runner's hook (ae_runner_collect) adds (double)x·x per channel of every linear
 * input while each window runs from position 0 without logits (what ae_calibrate always did). */
static int cpu_calib_sumsq(ae_engine *e, const int *tokens, int n, int T, ae_calib *c, char *err) {
    int rc = 0;
    ae_runner_collect(e->runner, c);
    for (int w = 0; w < n && !rc; w++) {
        ae_runner_truncate(e->runner, 0);
        if (ae_forward(e->runner, tokens + (size_t)w * T, T, 0, T, NULL, err)) rc = -1;
        else c->tokens += T;
    }
    ae_runner_collect(e->runner, NULL);
    ae_runner_truncate(e->runner, 0);
    return rc;
}

const ae_backend ae_backend_cpu = {"cpu", cpu_build, cpu_destroy, cpu_forward, cpu_truncate,
                                   cpu_refstore_alloc, cpu_refstore_release, cpu_score, cpu_describe, NULL, NULL,
                                   NULL, NULL, cpu_calib_sumsq};

/* ---- the interface ---------------------------------------------------------------------------- */

int ae_engine_new(const ae_model *m, const ae_engine_opts *o, const ae_calib *calib, ae_engine **out,
                  char *err) {
    *out = NULL;
    if (!m || !o) { SETERR("engine: model or options missing"); return -1; }
    if (o->max_seq < 1) { SETERR("engine: max_seq %d < 1", o->max_seq); return -1; }
    if (o->mode.needs_calib && !calib) {
        SETERR("mode %s needs the Atom calibration (channel orders)", o->mode.name);
        return -1;
    }
    ae_engine *e = calloc(1, sizeof *e);
    if (!e) { SETERR("engine: out of memory"); return -1; }
    e->m = m;
    e->o = *o;
    e->be = o->device == AE_DEV_CUDA ? &ae_backend_cuda : &ae_backend_cpu;
    if (e->be->build(e, calib, err)) { ae_engine_free(e); return -1; }
    *out = e;
    return 0;
}

void ae_engine_free(ae_engine *e) {
    if (!e) return;
    if (e->be) e->be->destroy(e);
    free(e->last_seq);
    free(e);
}

int ae_engine_forward(ae_engine *e, const int *tokens, int T, int pos, int logits_from, float *logits,
                      char *err) {
    e->last_len = 0;   /* the cache no longer holds loglik_packed's last sequence */
    int rc = e->be->forward(e, tokens, T, pos, logits_from, logits, err);
    e->pos = rc ? pos : pos + T;
    return rc;
}

void ae_engine_truncate(ae_engine *e, int pos) {
    if (pos < 0) pos = 0;
    if (pos < e->pos) { e->be->truncate(e, pos); e->pos = pos; }
}

int ae_engine_pos(const ae_engine *e) { return e->pos; }
const ae_engine_opts *ae_engine_opts_of(const ae_engine *e) { return &e->o; }
const ae_model *ae_engine_model(const ae_engine *e) { return e->m; }
ae_runner *ae_engine_runner(ae_engine *e) { return e->runner; }
void ae_engine_describe(const ae_engine *e, char *buf, size_t len) { e->be->describe(e, buf, len); }
size_t ae_engine_peak_bytes(const ae_engine *e) { return e->peak_bytes; }

int ae_refstore_new(ae_engine *e, int n_windows, int seqlen, ae_refstore **out, char *err) {
    *out = NULL;
    if (n_windows < 1 || seqlen < 2) { SETERR("reference store: %d windows of %d tokens", n_windows, seqlen); return -1; }
    ae_refstore *rs = calloc(1, sizeof *rs);
    if (!rs) { SETERR("reference store: out of memory"); return -1; }
    rs->be = e->be;
    rs->n_windows = n_windows;
    rs->seqlen = seqlen;
    rs->vocab = e->m->cfg.vocab_size;
    if (e->be->refstore_alloc(e, rs, err)) { ae_refstore_free(rs); return -1; }
    *out = rs;
    return 0;
}

void ae_refstore_free(ae_refstore *rs) {
    if (!rs) return;
    rs->be->refstore_release(rs);
    free(rs);
}

int ae_engine_score_window(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window,
                           int store, double *nll, double *kld, int *same, char *err) {
    if (T < 2 || T > e->o.max_seq) { SETERR("window of %d tokens outside [2, %d]", T, e->o.max_seq); return -1; }
    if (rs && (window < 0 || window >= rs->n_windows || T != rs->seqlen)) {
        SETERR("window %ld (T %d) outside the reference store (%d windows of %d)", window, T, rs->n_windows,
               rs->seqlen);
        return -1;
    }
    if (rs && rs->be != e->be) { SETERR("reference store belongs to another backend"); return -1; }
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= e->m->cfg.vocab_size) {
            SETERR("token %d at window position %d is outside the vocabulary [0, %d)", tokens[t], t,
                   e->m->cfg.vocab_size);
            return -1;
        }
    e->last_len = 0;
    int rc = e->be->score(e, tokens, T, rs, window, store, nll, kld, same, err);
    e->be->truncate(e, 0);   /* the cuda backend scores without filling the KV cache: nothing usable */
    e->pos = 0;
    return rc;
}

int ae_engine_score_windows(ae_engine *e, const int *tokens, int n, int T, ae_refstore *rs, long window0,
                            int store, double *nll, double *kld, int *same, char *err) {
    if (n < 1) { SETERR("score windows: n %d < 1", n); return -1; }
    if (!e->be->score_windows) {
        for (int w = 0; w < n; w++) {
            size_t o = (size_t)w * (size_t)(T - 1);
            if (ae_engine_score_window(e, tokens + (size_t)w * T, T, rs, window0 + w, store, nll + o,
                                       kld ? kld + o : NULL, same ? same + o : NULL, err))
                return -1;
        }
        return 0;
    }
    if (T < 2 || T > e->o.max_seq) { SETERR("window of %d tokens outside [2, %d]", T, e->o.max_seq); return -1; }
    if (rs && (window0 < 0 || window0 + n > rs->n_windows || T != rs->seqlen)) {
        SETERR("windows %ld..%ld (T %d) outside the reference store (%d windows of %d)", window0, window0 + n - 1, T,
               rs->n_windows, rs->seqlen);
        return -1;
    }
    if (rs && rs->be != e->be) { SETERR("reference store belongs to another backend"); return -1; }
    for (size_t t = 0; t < (size_t)n * T; t++)
        if (tokens[t] < 0 || tokens[t] >= e->m->cfg.vocab_size) {
            SETERR("token %d at window %ld position %zu is outside the vocabulary [0, %d)", tokens[t],
                   window0 + (long)(t / T), t % T, e->m->cfg.vocab_size);
            return -1;
        }
    e->last_len = 0;
    int rc = e->be->score_windows(e, tokens, n, T, rs, window0, store, nll, kld, same, err);
    e->be->truncate(e, 0);
    e->pos = 0;
    return rc;
}

int ae_engine_layer_major(const ae_engine *e) { return e->be->layer_major ? e->be->layer_major(e) : 0; }

/* Sequence by sequence through forward, the KV cache kept for the prefix shared with the previous
 * sequence (lm-evaluation-harness requests of one document share their context). */
static int loglik_sequential(ae_engine *e, const int *tokens, const int *offsets, int n_seqs,
                             const int *targets, double *logp, int *greedy, char *err) {
    const int V = e->m->cfg.vocab_size;
    int maxlen = 0;
    for (int i = 0; i < n_seqs; i++)
        if (offsets[i + 1] - offsets[i] > maxlen) maxlen = offsets[i + 1] - offsets[i];
    float *lg = malloc((size_t)maxlen * (size_t)V * sizeof(float));
    if (!lg) { SETERR("logits: out of memory (%d x %d)", maxlen, V); return -1; }
    if (e->last_cap < maxlen) {
        int *p = realloc(e->last_seq, (size_t)maxlen * sizeof(int));
        if (!p) { free(lg); SETERR("out of memory"); return -1; }
        e->last_seq = p;
        e->last_cap = maxlen;
    }
    for (int i = 0; i < n_seqs; i++) {
        const int *sq = tokens + offsets[i];
        int L = offsets[i + 1] - offsets[i];
        int p = 0;   /* common prefix with the cached sequence, at most L - 1 (one token must run) */
        int cached = e->pos < e->last_len ? e->pos : e->last_len;
        while (p < cached && p < L - 1 && e->last_seq[p] == sq[p]) p++;
        /* rows for positions < p are not recomputed: they must not be scored */
        int first_scored = L;
        for (int j = 0; j < L; j++) if (targets[offsets[i] + j] >= 0) { first_scored = j; break; }
        if (first_scored < p) p = first_scored;
        if (p < e->pos) { e->be->truncate(e, p); e->pos = p; }
        if (e->be->forward(e, sq + p, L - p, p, 0, lg, err)) {
            free(lg);
            e->last_len = 0;
            e->pos = p;
            return -1;
        }
        e->pos = L;
        memcpy(e->last_seq, sq, (size_t)L * sizeof(int));
        e->last_len = L;
        for (int j = p; j < L; j++) {
            int tg = targets[offsets[i] + j];
            if (tg < 0) continue;
            const float *l = lg + (size_t)(j - p) * V;
            double lse = ae_logsumexp(l, V);
            if (!isfinite(lse)) {
                SETERR("sequence %d, position %d: non-finite logits (lm_head output), mode %s", i, j,
                       e->o.mode.name);
                free(lg);
                return -1;
            }
            int am = 0;
            for (int v = 1; v < V; v++) if (l[v] > l[am]) am = v;
            logp[offsets[i] + j] = (double)l[tg] - lse;
            greedy[offsets[i] + j] = am == tg;
        }
    }
    free(lg);
    return 0;
}

int ae_engine_loglik_packed(ae_engine *e, const int *tokens, const int *offsets, int n_seqs,
                            const int *targets, double *logp, int *greedy, char *err) {
    const int V = e->m->cfg.vocab_size;
    if (n_seqs < 1 || !offsets || offsets[0] != 0) { SETERR("packed batch: %d sequences, offsets[0] must be 0", n_seqs); return -1; }
    for (int i = 0; i < n_seqs; i++) {
        int L = offsets[i + 1] - offsets[i];
        if (L < 1 || L > e->o.max_seq) {
            SETERR("packed batch: sequence %d has %d tokens, outside [1, %d]", i, L, e->o.max_seq);
            return -1;
        }
    }
    for (int j = 0; j < offsets[n_seqs]; j++) {
        if (tokens[j] < 0 || tokens[j] >= V) { SETERR("packed batch: token %d at index %d outside [0, %d)", tokens[j], j, V); return -1; }
        if (targets[j] >= V) { SETERR("packed batch: target %d at index %d outside [0, %d)", targets[j], j, V); return -1; }
    }
    if (e->be->loglik_packed) return e->be->loglik_packed(e, tokens, offsets, n_seqs, targets, logp, greedy, err);
    return loglik_sequential(e, tokens, offsets, n_seqs, targets, logp, greedy, err);
}

int ae_engine_probe_linear(ae_engine *e, int layer, int proj, const uint16_t *x, int T, uint16_t *y, char *err) {
    if (!e->be->probe) { SETERR("probe: not available on the %s backend", e->be->name); return -1; }
    if (layer < 0 || layer >= e->m->cfg.n_layers || proj < 0 || proj > 6) {
        SETERR("probe: layer %d / projection %d out of range", layer, proj);
        return -1;
    }
    if (T < 1 || T > e->o.max_seq) { SETERR("probe: T %d outside [1, %d]", T, e->o.max_seq); return -1; }
    e->last_len = 0;
    return e->be->probe(e, layer, proj, x, T, y, err);
}

int ae_engine_calib_sumsq(ae_engine *e, const int *tokens, int n_windows, int seqlen, ae_calib *c, char *err) {
    const ae_config *cfg = &e->m->cfg;
    if (!tokens || !c) { SETERR("calibration: %s is NULL", !tokens ? "tokens" : "the calibration"); return -1; }
    if (n_windows < 1 || seqlen < 1 || seqlen > e->o.max_seq) {
        SETERR("calibration: need n_windows >= 1 and seqlen in [1, %d] (the engine's max_seq), got %d windows of %d",
               e->o.max_seq, n_windows, seqlen);
        return -1;
    }
    if (!aq_mode_is_fp16(&e->o.mode) || e->o.kv4) {
        SETERR("calibration runs the FP16 model: the engine runs mode %s%s", e->o.mode.name, e->o.kv4 ? " with kv4" : "");
        return -1;
    }
    const int w[AE_NSITES] = {cfg->dim, cfg->n_heads * cfg->head_dim, cfg->dim, cfg->hidden_dim};
    if (c->n_layers != cfg->n_layers || memcmp(c->width, w, sizeof w) || !c->sumsq) {
        SETERR("calibration of %d layers with widths %d/%d/%d/%d for model %s of %d layers with %d/%d/%d/%d",
               c->n_layers, c->width[0], c->width[1], c->width[2], c->width[3], e->m->dir, cfg->n_layers, w[0], w[1],
               w[2], w[3]);
        return -1;
    }
    for (size_t t = 0; t < (size_t)n_windows * (size_t)seqlen; t++)
        if (tokens[t] < 0 || tokens[t] >= cfg->vocab_size) {
            SETERR("calibration: token %d at window %zu position %zu is outside the vocabulary [0, %d)", tokens[t],
                   t / (size_t)seqlen, t % (size_t)seqlen, cfg->vocab_size);
            return -1;
        }
    if (!e->be->calib_sumsq) { SETERR("calibration: not available on the %s backend", e->be->name); return -1; }
    e->last_len = 0;
    int rc = e->be->calib_sumsq(e, tokens, n_windows, seqlen, c, err);
    e->be->truncate(e, 0);
    e->pos = 0;
    return rc;
}
