/* ppl.c — perplexity, KL divergence and top-1 agreement per mode (see ppl.h). */
#include "ppl.h"

#include <errno.h>
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

/* Sums of one mode over a set of predictions. */
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

/* ---- per-window partial results: the unit of sharding, reduction and checkpoints --------------- */

/* Every window's sums start from zero (acc_add over its seqlen-1 predictions, in position order);
 * the totals are the window sums added in window order (st_total). So the numbers do not depend on
 * which rank scored which window, nor on a run having been resumed: N = 1 and N = 2 ranks, and an
 * interrupted-and-resumed run, give the same bits. State per window, all doubles (gathered across
 * ranks with one MPI_Allgatherv, written to checkpoints as exact hex floats):
 *   [0] reference done (0/1), [1] the reference's Σ NLL over the window,
 *   then per mode k at 2 + PW_MODE*k: done (0/1), Σnll, Σnll², Σkld, Σkld², max kld, n, n_same. */
enum { PW_REF = 2, PW_MODE = 8 };
typedef struct {
    long nw;
    int n_modes, per;        /* per = PW_REF + PW_MODE * n_modes doubles per window            */
    double *v;               /* (nw, per)                                                     */
} ppl_state;

static double *st_win(const ppl_state *s, long w) { return s->v + (size_t)w * s->per; }
static double *st_mode(const ppl_state *s, long w, int k) { return st_win(s, w) + PW_REF + PW_MODE * k; }

static void st_put(const ppl_state *s, long w, int k, const acc_t *a) {
    double *p = st_mode(s, w, k);
    p[0] = 1;
    p[1] = a->s_nll; p[2] = a->s_nll2; p[3] = a->s_kld; p[4] = a->s_kld2; p[5] = a->kld_max;
    p[6] = (double)a->n; p[7] = (double)a->n_same;
}

/* window w finished: the reference and every applicable mode */
static int st_window_done(const ppl_state *s, long w, const ae_ppl_result *res) {
    if (st_win(s, w)[0] == 0) return 0;
    for (int k = 0; k < s->n_modes; k++)
        if (res->modes[k].applicable && st_mode(s, w, k)[0] == 0) return 0;
    return 1;
}

static long st_done_windows(const ppl_state *s, const ae_ppl_result *res) {
    long c = 0;
    for (long w = 0; w < s->nw; w++) c += st_window_done(s, w, res);
    return c;
}

/* The totals, window sums added in window order. */
static void st_total(const ppl_state *s, int k, acc_t *a) {
    memset(a, 0, sizeof *a);
    for (long w = 0; w < s->nw; w++) {
        const double *p = st_mode(s, w, k);
        a->s_nll += p[1]; a->s_nll2 += p[2]; a->s_kld += p[3]; a->s_kld2 += p[4];
        if (p[5] > a->kld_max) a->kld_max = p[5];
        a->n += (long)p[6];
        a->n_same += (long)p[7];
    }
}

/* 64-bit FNV-1a */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}
#define FNV_BASIS 14695981039346656037ULL

#define CKPT_FORMAT "apex4 eval ppl checkpoint v1"

/* The first "key=value" field (fields separated by '|') where a and b differ, as "<a's> here
 * <b's>", for the refusal message. */
static void first_difference(const char *a, const char *b, char *out, size_t len) {
    while (*a || *b) {
        const char *ea = strchr(a, '|'), *eb = strchr(b, '|');
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        if (la != lb || memcmp(a, b, la)) {
            snprintf(out, len, "'%.*s' there, '%.*s' here", (int)(la > 300 ? 300 : la), a,
                     (int)(lb > 300 ? 300 : lb), b);
            return;
        }
        a += la + (ea != NULL);
        b += lb + (eb != NULL);
    }
    snprintf(out, len, "the argument hashes differ");
}

/* Write the state atomically (rank 0):
 * {"format", "args_hash": 16 hex digits (FNV-1a of args), "args": str, "windows": nw, "modes": [names],
 *  "per_window": per, "done_windows": windows finished, "state": [nw entries: null (nothing done) or
 *  [per hex-float strings ("%a": exact)]]} */
static int ckpt_write(const char *path, const char *args, const ppl_state *s, const ae_ppl_result *res, char *err) {
    cJSON *doc = cJSON_CreateObject();
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)fnv1a(FNV_BASIS, args, strlen(args)));
    int ok = doc != NULL;
    ok = ok && cJSON_AddStringToObject(doc, "format", CKPT_FORMAT);
    ok = ok && cJSON_AddStringToObject(doc, "args_hash", hash);
    ok = ok && cJSON_AddStringToObject(doc, "args", args);
    ok = ok && cJSON_AddNumberToObject(doc, "windows", (double)s->nw);
    cJSON *ms = ok ? cJSON_AddArrayToObject(doc, "modes") : NULL;
    ok = ok && ms;
    for (int k = 0; ok && k < s->n_modes; k++) {
        cJSON *str = cJSON_CreateString(res->modes[k].mode.name);
        ok = str && cJSON_AddItemToArray(ms, str);
    }
    ok = ok && cJSON_AddNumberToObject(doc, "per_window", s->per);
    ok = ok && cJSON_AddNumberToObject(doc, "done_windows", (double)st_done_windows(s, res));
    cJSON *arr = ok ? cJSON_AddArrayToObject(doc, "state") : NULL;
    ok = ok && arr;
    for (long w = 0; ok && w < s->nw; w++) {
        const double *p = st_win(s, w);
        int any = p[0] != 0;
        for (int k = 0; k < s->n_modes; k++) any |= st_mode(s, w, k)[0] != 0;
        cJSON *e = any ? cJSON_CreateArray() : cJSON_CreateNull();
        ok = e && cJSON_AddItemToArray(arr, e);
        for (int i = 0; ok && any && i < s->per; i++) {
            char b[40];
            snprintf(b, sizeof b, "%a", p[i]);
            cJSON *str = cJSON_CreateString(b);
            ok = str && cJSON_AddItemToArray(e, str);
        }
    }
    if (!ok) { cJSON_Delete(doc); SETERR("%s: out of memory building the checkpoint", path); return -1; }
    int rc = ax_write_json(path, doc, err);
    cJSON_Delete(doc);
    return rc;
}

/* Read a checkpoint written by ckpt_write for the same args into s (rank 0). 1: loaded, 0: no file,
 * -1: error (a file from other arguments, another format, a corrupt entry: named). */
static int ckpt_read(const char *path, const char *args, ppl_state *s, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    cJSON *doc = ax_json_read_file(path, err);
    if (!doc) return -1;
    int rc = -1;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(doc, "format");
    const cJSON *ja = cJSON_GetObjectItemCaseSensitive(doc, "args");
    const cJSON *jh = cJSON_GetObjectItemCaseSensitive(doc, "args_hash");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "state");
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)fnv1a(FNV_BASIS, args, strlen(args)));
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, CKPT_FORMAT)) {
        SETERR("--resume: %s is not an apex4 eval ppl checkpoint (format \"" CKPT_FORMAT "\" expected)", path);
        goto done;
    }
    if (!cJSON_IsString(ja) || !cJSON_IsString(jh)) { SETERR("--resume: %s: args or args_hash missing", path); goto done; }
    if (strcmp(jh->valuestring, hash) || strcmp(ja->valuestring, args)) {
        char diff[700];
        first_difference(ja->valuestring, args, diff, sizeof diff);
        SETERR("--resume: %s was written by a run with other arguments (%s); refusing to resume from it: "
               "run with the same arguments, or remove it (or leave out --resume) to start over", path, diff);
        goto done;
    }
    if (!cJSON_IsArray(st) || cJSON_GetArraySize(st) != s->nw) {
        SETERR("--resume: %s: \"state\" is not an array of %ld windows", path, s->nw);
        goto done;
    }
    long w = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, st) {
        double *p = st_win(s, w);
        if (cJSON_IsNull(e)) { memset(p, 0, (size_t)s->per * sizeof *p); w++; continue; }
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != s->per) {
            SETERR("--resume: %s: window %ld: expected null or %d numbers", path, w, s->per);
            goto done;
        }
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, e) {
            char *end = NULL;
            double v = cJSON_IsString(x) ? strtod(x->valuestring, &end) : NAN;
            if (!end || *end || end == x->valuestring || !isfinite(v)) {
                SETERR("--resume: %s: window %ld, value %d: not a finite hex float", path, w, i);
                goto done;
            }
            p[i++] = v;
        }
        /* done flags are 0 or 1 */
        int bad = p[0] != 0 && p[0] != 1;
        for (int k = 0; k < s->n_modes; k++) bad |= st_mode(s, w, k)[0] != 0 && st_mode(s, w, k)[0] != 1;
        if (bad) { SETERR("--resume: %s: window %ld: a done flag is neither 0 nor 1", path, w); goto done; }
        w++;
    }
    rc = 1;
done:
    cJSON_Delete(doc);
    return rc;
}

/* What a run needs beyond the options: ranks, checkpoints (see ae_ppl_ctl). */
typedef struct {
    ae_dist *d;
    const ae_ppl_ctl *c;
    const char *args;        /* the full argument key (ctl->args_key + what ae_eval_ppl adds)        */
    double last;             /* time of the last checkpoint (or the start)                         */
    long lo, hi, steps;      /* this rank's windows [lo, hi); steps every rank takes (longest block)  */
} ppl_run;

/* One meeting of the ranks after a step: fail together when any rank failed (local_rc), write a
 * checkpoint when rank 0's clock says so (every rank sends its block, rank 0 writes). */
static int run_step(ppl_run *r, int local_rc, ppl_state *s, const ae_ppl_result *res, char *err) {
    int ck = 0;
    if (r->c && r->c->checkpoint && ae_dist_rank(r->d) == 0)
        ck = r->c->checkpoint_every <= 0 || ax_now() - r->last >= r->c->checkpoint_every;
    if (ae_dist_agree(r->d, local_rc, &ck, err)) return -1;
    if (!ck) return 0;
    if (ae_dist_allgather_blocks(r->d, 0, s->v, s->nw, s->per, err)) return -1;
    if (ae_dist_rank(r->d) == 0) {
        char e2[AX_ERR_LEN];
        if (ckpt_write(r->c->checkpoint, r->args, s, res, e2) && r->c->log)
            fprintf(r->c->log, "warning: checkpoint not written: %s\n", e2);
    }
    r->last = ax_now();
    return 0;
}

/* The device schedule (ppl.h ae_ppl_opts.device): the FP16 reference over the rank's windows first,
 * its log-probs kept once in an ae_refstore; then each mode alone, scored against the store. Every
 * window's sums go to its own slot of the state. On resume the reference is run again for the
 * windows that still have a mode to score (the store lives in device memory, not in checkpoints). */
/* Layer-major engines: all of this rank's pending windows of one pass scored by one
 * ae_engine_score_windows call (every window through a layer before the next layer is loaded); the
 * step loop then takes each window's arrays from here instead of scoring it. A pass cannot be
 * checkpointed halfway: resume redoes the pass. */
typedef struct { long n, *win; double *nll, *kld; int *same; } lm_batch_t;

static void lm_free(lm_batch_t *b) {
    free(b->win); free(b->nll); free(b->kld); free(b->same);
    memset(b, 0, sizeof *b);
}

/* pending: need[w] (reference pass, need != NULL) or mode k of st not done */
static int lm_batch(ae_engine *eng, const int *tokens, int T, long lo, long hi, const char *need, ppl_state *st,
                    int k, ae_refstore *rs, int store, lm_batch_t *b, char *err) {
    lm_free(b);
    long n = 0;
    for (long w = lo; w < hi; w++) n += need ? need[w] != 0 : st_mode(st, w, k)[0] == 0;
    if (n == 0) return 0;
    size_t per = (size_t)(T - 1);
    int *tw = malloc((size_t)n * T * sizeof *tw);
    b->win = malloc((size_t)n * sizeof *b->win);
    b->nll = malloc((size_t)n * per * sizeof *b->nll);
    b->kld = malloc((size_t)n * per * sizeof *b->kld);
    b->same = malloc((size_t)n * per * sizeof *b->same);
    if (!tw || !b->win || !b->nll || !b->kld || !b->same) { free(tw); lm_free(b); SETERR("out of memory"); return -1; }
    long i = 0, first = -1, contiguous = 1;
    for (long w = lo; w < hi; w++)
        if (need ? need[w] != 0 : st_mode(st, w, k)[0] == 0) {
            if (first < 0) first = w;
            if (w != first + i) contiguous = 0;
            b->win[i] = w;
            memcpy(tw + (size_t)i * T, tokens + (size_t)w * T, (size_t)T * sizeof *tw);
            i++;
        }
    int rc = 0;
    if (contiguous) {
        rc = ae_engine_score_windows(eng, tw, (int)n, T, rs, first - lo, store, b->nll, store ? NULL : b->kld,
                                     store ? NULL : b->same, err);
    } else {   /* windows left after a resume are not contiguous in the store: one call per run of them */
        for (long a = 0; a < n && !rc;) {
            long z = a + 1;
            while (z < n && b->win[z] == b->win[z - 1] + 1) z++;
            rc = ae_engine_score_windows(eng, tw + (size_t)a * T, (int)(z - a), T, rs, b->win[a] - lo, store,
                                         b->nll + a * per, store ? NULL : b->kld + a * per,
                                         store ? NULL : b->same + a * per, err);
            a = z;
        }
    }
    free(tw);
    if (rc) { lm_free(b); return -1; }
    b->n = n;
    return 0;
}

/* window w's arrays from the batch into nll, kld, same [T-1] (kld/same NULL: not copied) */
static int lm_take(const lm_batch_t *b, long w, int T, double *nll, double *kld, int *same) {
    size_t per = (size_t)(T - 1);
    for (long i = 0; i < b->n; i++)
        if (b->win[i] == w) {
            memcpy(nll, b->nll + i * per, per * sizeof *nll);
            if (kld) memcpy(kld, b->kld + i * per, per * sizeof *kld);
            if (same) memcpy(same, b->same + i * per, per * sizeof *same);
            return 0;
        }
    return -1;
}

static int eval_ppl_stored(const ae_model *m, const int *tokens, long nw, const ae_ppl_opts *o, ppl_run *run,
                           ppl_state *st, ae_ppl_result *res, char *err) {
    const int T = o->seqlen;
    int rc = -1, lrc = 0;
    ae_engine *eng = NULL;
    ae_refstore *rs = NULL;
    lm_batch_t lb = {0};
    int *reuse = calloc((size_t)o->n_modes, sizeof *reuse);
    double *nll = malloc((size_t)T * sizeof(double)), *kld = malloc((size_t)T * sizeof(double));
    int *same = malloc((size_t)T * sizeof(int));
    char *need = calloc((size_t)nw + 1, 1);   /* window needs the reference run */
    ax_progress pg;
    char label[96] = "ppl";
    const long lo = run->lo, hi = run->hi, nb = hi - lo;
    if (!reuse || !nll || !kld || !same || !need) { SETERR("out of memory"); lrc = -1; }
    ae_engine_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.device = o->device;
    if (!lrc && aq_mode_parse("fp16", &ro.mode, err)) lrc = -1;
    ro.gemm = AE_GEMM_FAKE;
    ro.nthreads = o->nthreads;
    ro.max_seq = T;
    if (run->c) {
        ro.layer_major = run->c->layer_major;
        ro.gpu_mem_limit = run->c->gpu_mem_limit;
        ro.gpu = run->c->gpu;   /* every engine of this rank (reference and modes) on the rank's GPU */
    }
    int n_forward = 1;
    for (int k = 0; k < o->n_modes && !lrc; k++) {
        if (!res->modes[k].applicable) continue;
        if (aq_mode_is_fp16(&o->modes[k]) && !o->kv4) reuse[k] = 1;
        else n_forward++;
    }
    long n_need = 0;
    for (long w = lo; w < hi && !lrc; w++) {
        need[w] = !st_window_done(st, w, res);
        n_need += need[w];
    }
    if (o->progress) ax_progress_start(&pg, label, nb * n_forward * (long)T, "tok");
    double t0 = ax_now(), ref_build = 0, ref_peak = 0;
    if (!lrc && n_need > 0) {
        if (ae_engine_new(m, &ro, NULL, &eng, err)) lrc = -1;
        ref_build = ax_now() - t0;
        if (!lrc) ae_engine_describe(eng, res->backend, sizeof res->backend);
        if (!lrc && ae_refstore_new(eng, (int)nb, T, &rs, err)) lrc = -1;
        res->ref_store_gib = (double)nb * (T - 1) * m->cfg.vocab_size * 4.0 / 1073741824.0;
    }
    if (!lrc && eng && ae_engine_layer_major(eng)) {   /* every pending window through each layer at once */
        if (lm_batch(eng, tokens, T, lo, hi, need, NULL, 0, rs, 1, &lb, err)) lrc = -1;
        res->layer_major = 1;
    }
    if (ae_dist_agree(run->d, lrc, NULL, err)) goto done;
    for (long i = 0; i < run->steps; i++) {
        long w = lo + i;
        if (w < hi && need[w]) {
            const int *tw = tokens + (size_t)w * T;
            snprintf(label, sizeof label, "ppl fp16 (reference) window %ld/%ld", w + 1, nw);
            char e2[AX_ERR_LEN] = "window missing from the layer-major batch";
            if (lb.n ? lm_take(&lb, w, T, nll, NULL, NULL)
                     : ae_engine_score_window(eng, tw, T, rs, w - lo, 1, nll, NULL, NULL, e2)) {
                SETERR("mode fp16 (reference), window %ld of %ld: %s", w, nw, e2);
                lrc = -1;
            } else {
                acc_t wa = {0};
                acc_add(&wa, nll, NULL, NULL, T - 1);
                st_win(st, w)[0] = 1;
                st_win(st, w)[1] = wa.s_nll;
                for (int k = 0; k < o->n_modes; k++)
                    if (res->modes[k].applicable && reuse[k]) st_put(st, w, k, &wa);
            }
        }
        if (o->progress && w < hi) ax_progress_update(&pg, (i + 1) * (long)T);
        if (run_step(run, lrc, st, res, err)) goto done;
    }
    res->ref_seconds = ax_now() - t0;
    if (eng) ref_peak = (double)ae_engine_peak_bytes(eng);
    ae_engine_free(eng);
    eng = NULL;
    int done_modes = 1;
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        if (!r->applicable) continue;
        if (reuse[k]) {
            r->seconds = res->ref_seconds;
            r->build_seconds = ref_build;
            r->window_seconds = nb > 0 ? (r->seconds - ref_build) / (double)nb : 0;
            r->peak_gib = ref_peak / 1073741824.0;
            continue;
        }
        double t1 = ax_now();
        ae_engine_opts mo = ro;
        mo.mode = o->modes[k];
        mo.gemm = o->gemm;
        mo.kv4 = o->kv4;
        char e2[AX_ERR_LEN];
        long todo = 0;
        for (long w = lo; w < hi; w++) todo += st_mode(st, w, k)[0] == 0;
        if (todo > 0 && ae_engine_new(m, &mo, o->calib, &eng, e2)) { SETERR("mode %s: %s", o->modes[k].name, e2); lrc = -1; }
        r->build_seconds = ax_now() - t1;
        lm_free(&lb);
        snprintf(e2, sizeof e2, "window missing from the layer-major batch");
        if (!lrc && eng && ae_engine_layer_major(eng)) {
            if (lm_batch(eng, tokens, T, lo, hi, NULL, st, k, rs, 0, &lb, err)) lrc = -1;
            res->layer_major = 1;
        }
        if (ae_dist_agree(run->d, lrc, NULL, err)) goto done;
        for (long i = 0; i < run->steps; i++) {
            long w = lo + i;
            if (w < hi && st_mode(st, w, k)[0] == 0) {
                const int *tw = tokens + (size_t)w * T;
                snprintf(label, sizeof label, "ppl %s window %ld/%ld", o->modes[k].name, w + 1, nw);
                if (lb.n ? lm_take(&lb, w, T, nll, kld, same)
                         : ae_engine_score_window(eng, tw, T, rs, w - lo, 0, nll, kld, same, e2)) {
                    SETERR("mode %s, window %ld of %ld: %s", o->modes[k].name, w, nw, e2);
                    lrc = -1;
                }
                for (int t = 0; t < T - 1 && !lrc; t++)
                    if (!isfinite(nll[t]) || !isfinite(kld[t])) {
                        SETERR("mode %s, window %ld of %ld, position %d: non-finite NLL or KL divergence "
                               "(lm_head output)", o->modes[k].name, w, nw, t);
                        lrc = -1;
                    }
                if (!lrc) {
                    acc_t wa = {0};
                    acc_add(&wa, nll, kld, same, T - 1);
                    st_put(st, w, k, &wa);
                }
            }
            if (o->progress && w < hi) ax_progress_update(&pg, (done_modes * nb + i + 1) * (long)T);
            if (run_step(run, lrc, st, res, err)) goto done;
        }
        if (eng) r->peak_gib = (double)ae_engine_peak_bytes(eng) / 1073741824.0;
        ae_engine_free(eng);
        eng = NULL;
        r->seconds = ax_now() - t1;
        r->window_seconds = nb > 0 ? (r->seconds - r->build_seconds) / (double)nb : 0;
        done_modes++;
    }
    if (o->progress) ax_progress_end(&pg, nb * n_forward * (long)T);
    res->forward_tokens = nw * n_forward * (long)T;
    rc = 0;
done:
    if (rc && o->progress) ax_progress_end(&pg, 0);
    ae_engine_free(eng);
    ae_refstore_free(rs);
    lm_free(&lb);
    free(reuse); free(nll); free(kld); free(same); free(need);
    return rc;
}

/* The cpu schedule: windows outer, every mode's engine alive, the reference scored in host memory. */
static int eval_ppl_cpu(const ae_model *m, const int *tokens, long nw, const ae_ppl_opts *o, ppl_run *run,
                        ppl_state *st, ae_ppl_result *res, char *err) {
    const int T = o->seqlen, V = m->cfg.vocab_size;
    ae_engine **eng = calloc((size_t)o->n_modes, sizeof *eng);
    int *reuse = calloc((size_t)o->n_modes, sizeof *reuse);
    size_t TV = (size_t)T * V;
    float *ref_logits = malloc(TV * sizeof(float)), *ref_p = malloc(TV * sizeof(float));
    float *logits = malloc(TV * sizeof(float));
    double *ref_lse = malloc((size_t)T * sizeof(double)), *nll = malloc((size_t)T * sizeof(double));
    double *ref_psum = malloc((size_t)T * sizeof(double));
    double *kld = malloc((size_t)T * sizeof(double));
    int *amax = malloc((size_t)T * sizeof(int)), *same = malloc((size_t)T * sizeof(int));
    ae_engine *ref = NULL;
    int rc = -1, lrc = 0;
    const long lo = run->lo, hi = run->hi, nb = hi - lo;
    if (!eng || !reuse || !ref_logits || !ref_p || !logits || !ref_lse || !nll || !kld || !amax || !same ||
        !ref_psum) {
        SETERR("out of memory (seqlen %d x vocab %d logits buffers)", T, V);
        lrc = -1;
    }
    ae_engine_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.device = AE_DEV_CPU;
    if (!lrc && aq_mode_parse("fp16", &ro.mode, err)) lrc = -1;
    ro.gemm = AE_GEMM_FAKE;
    ro.nthreads = o->nthreads;
    ro.max_seq = T;
    if (!lrc && ae_engine_new(m, &ro, NULL, &ref, err)) lrc = -1;
    if (!lrc) ae_engine_describe(ref, res->backend, sizeof res->backend);
    for (int k = 0; k < o->n_modes && !lrc; k++) {
        if (!res->modes[k].applicable) continue;
        /* fp16 without kv4 is the reference itself: score its logits (KLD exactly 0 by construction
         * of ae_score_row, which recomputes both log-distributions the same way) */
        if (aq_mode_is_fp16(&o->modes[k]) && !o->kv4) { reuse[k] = 1; continue; }
        ae_engine_opts mo = ro;
        mo.mode = o->modes[k];
        mo.gemm = o->gemm;
        mo.kv4 = o->kv4;
        char e2[AX_ERR_LEN];
        if (ae_engine_new(m, &mo, o->calib, &eng[k], e2)) {
            SETERR("mode %s: %s", o->modes[k].name, e2);
            lrc = -1;
        }
    }
    if (ae_dist_agree(run->d, lrc, NULL, err)) goto done;
    int n_forward = 1;
    for (int k = 0; k < o->n_modes; k++) n_forward += eng[k] != NULL;
    ax_progress pg;
    char label[64] = "ppl";  /* "ppl window w/W": the bar counts forward tokens (tok/s, ETA) */
    if (o->progress) ax_progress_start(&pg, label, nb * n_forward * (long)T, "tok");
    ref_ctx rctx = {V, ref_logits, ref_lse, ref_psum, ref_p, amax};
    for (long i = 0; i < run->steps; i++) {
        long w = lo + i;
        if (w >= hi || st_window_done(st, w, res)) {
            if (run_step(run, 0, st, res, err)) goto done;
            continue;
        }
        const int *tw = tokens + (size_t)w * T;
        snprintf(label, sizeof label, "ppl window %ld/%ld", w + 1, nw);
        double t0 = ax_now();
        ae_engine_truncate(ref, 0);
        lrc = ae_engine_forward(ref, tw, T, 0, 0, ref_logits, err) ? -1 : 0;
        if (!lrc) {
            ae_parallel_for(o->nthreads, T - 1, 4, ref_rows, &rctx);
            if (ae_ppl_check_logits(ref_logits, T, V, "fp16 (reference)", w, nw, m->dir, err)) lrc = -1;
        }
        for (int t = 0; t < T - 1 && !lrc; t++)  /* finite logits give a finite lse: a guard, not expected */
            if (!isfinite(ref_lse[t]) || !isfinite(ref_psum[t])) {
                SETERR("mode fp16 (reference), window %ld of %ld, position %d: log-sum-exp of the logits "
                       "(lm_head output) is not finite", w, nw, t);
                lrc = -1;
            }
        double ref_s = 0;
        for (int t = 0; t < T - 1 && !lrc; t++) ref_s += ref_lse[t] - (double)ref_logits[(size_t)t * V + tw[t + 1]];
        res->ref_seconds += ax_now() - t0;
        if (o->progress) ax_progress_update(&pg, (i * n_forward + 1) * (long)T);
        int done_fw = 1;
        for (int k = 0; k < o->n_modes && !lrc; k++) {
            if (!res->modes[k].applicable) continue;
            double t1 = ax_now();
            const float *lg = ref_logits;
            if (!reuse[k]) {
                ae_engine_truncate(eng[k], 0);
                char e2[AX_ERR_LEN];
                if (ae_engine_forward(eng[k], tw, T, 0, 0, logits, e2)) {
                    SETERR("mode %s, window %ld: %s", o->modes[k].name, w, e2);
                    lrc = -1;
                    break;
                }
                lg = logits;
                if (ae_ppl_check_logits(logits, T, V, o->modes[k].name, w, nw, m->dir, err)) { lrc = -1; break; }
            }
            score_ctx sc = {V, &rctx, lg, tw, nll, kld, same};
            ae_parallel_for(o->nthreads, T - 1, 4, score_rows, &sc);
            for (int t = 0; t < T - 1 && !lrc; t++)
                if (!isfinite(nll[t]) || !isfinite(kld[t])) {
                    SETERR("mode %s, window %ld of %ld, position %d: non-finite NLL or KL divergence from "
                           "finite logits (lm_head output)", o->modes[k].name, w, nw, t);
                    lrc = -1;
                }
            if (lrc) break;
            acc_t wa = {0};
            acc_add(&wa, nll, kld, same, T - 1);
            st_put(st, w, k, &wa);
            res->modes[k].seconds += ax_now() - t1;
            if (!reuse[k]) done_fw++;
            if (o->progress) ax_progress_update(&pg, (i * n_forward + done_fw) * (long)T);
        }
        if (!lrc) {   /* the window counts as done only with every mode */
            st_win(st, w)[0] = 1;
            st_win(st, w)[1] = ref_s;
        }
        if (run_step(run, lrc, st, res, err)) { if (o->progress) ax_progress_end(&pg, 0); goto done; }
    }
    if (o->progress) ax_progress_end(&pg, nb * n_forward * (long)T);
    res->forward_tokens = nw * n_forward * (long)T;
    for (int k = 0; k < o->n_modes; k++)
        if (res->modes[k].applicable && reuse[k]) res->modes[k].seconds += res->ref_seconds;
    rc = 0;
done:
    if (eng)
        for (int k = 0; k < o->n_modes; k++) ae_engine_free(eng[k]);
    ae_engine_free(ref);
    free(eng); free(reuse);
    free(ref_logits); free(ref_p); free(logits); free(ref_lse); free(ref_psum); free(nll); free(kld);
    free(amax); free(same);
    return rc;
}

int ae_eval_ppl(const ae_model *m, const int *tokens, size_t n_tokens, const ae_ppl_opts *o,
                ae_ppl_result *res, char *err) {
    return ae_eval_ppl_ctl(m, tokens, n_tokens, o, NULL, res, err);
}

int ae_eval_ppl_ctl(const ae_model *m, const int *tokens, size_t n_tokens, const ae_ppl_opts *o,
                    const ae_ppl_ctl *ctl, ae_ppl_result *res, char *err) {
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
    if (ctl && ctl->resume && !ctl->checkpoint) { SETERR("--resume needs a checkpoint file (--out OUT: OUT.partial)"); return -1; }
    res->seqlen = T;
    res->windows = (int)nw;
    res->stream_tokens = (long)n_tokens;
    res->scored = nw * (T - 1);
    res->n_modes = o->n_modes;
    res->modes = calloc((size_t)o->n_modes, sizeof *res->modes);
    ppl_state st = {nw, o->n_modes, PW_REF + PW_MODE * o->n_modes, NULL};
    st.v = calloc((size_t)nw * (size_t)st.per, sizeof *st.v);
    char *args = NULL;
    int rc = -1;
    ppl_run run;
    memset(&run, 0, sizeof run);
    run.d = ctl ? ctl->dist : NULL;
    run.c = ctl;
    run.last = t_start;
    ae_dist_block(nw, ae_dist_rank(run.d), ae_dist_size(run.d), &run.lo, &run.hi);
    run.steps = ae_dist_max_block(nw, ae_dist_size(run.d));
    if (!res->modes || !st.v) { SETERR("out of memory"); goto done; }
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        r->mode = o->modes[k];
        r->applicable = ae_mode_check(m, &o->modes[k], r->note) == 0;
    }
    if (ctl && ctl->checkpoint) {
        /* what the numbers depend on beyond the caller's key: the evaluated tokens, seqlen, windows,
         * modes, gemm, kv4, device (not ranks or threads: the numbers do not depend on them) */
        uint64_t th = fnv1a(FNV_BASIS, tokens, (size_t)nw * T * sizeof *tokens);
        size_t cap = (ctl->args_key ? strlen(ctl->args_key) : 0) + 256 + (size_t)o->n_modes * 64;
        args = malloc(cap);
        if (!args) { SETERR("out of memory"); goto done; }
        int n = snprintf(args, cap, "%s%sseqlen=%d|windows=%ld|tokens=%016llx|gemm=%s|kv4=%d|device=%s|modes=",
                         ctl->args_key ? ctl->args_key : "", ctl->args_key && *ctl->args_key ? "|" : "", T, nw,
                         (unsigned long long)th, ae_gemm_name(o->gemm), o->kv4 != 0, ae_device_name(o->device));
        for (int k = 0; k < o->n_modes; k++)
            n += snprintf(args + n, cap - (size_t)n, "%s%s", k ? "," : "", o->modes[k].name);
        run.args = args;
        int lrc = 0, loaded = 0;
        if (ctl->resume && ae_dist_rank(run.d) == 0) {
            loaded = ckpt_read(ctl->checkpoint, args, &st, err);
            if (loaded < 0) lrc = -1;
            else if (!loaded) memset(st.v, 0, (size_t)nw * st.per * sizeof *st.v);
            if (ctl->log && loaded == 0)
                fprintf(ctl->log, "--resume: no checkpoint %s: starting from the first window\n", ctl->checkpoint);
            if (ctl->log && loaded == 1)
                fprintf(ctl->log, "--resume: %s: %ld of %ld windows finished, continuing\n", ctl->checkpoint,
                        st_done_windows(&st, res), nw);
        } else if (ctl->log && ae_dist_rank(run.d) == 0) {
            FILE *f = fopen(ctl->checkpoint, "rb");
            if (f) {
                fclose(f);
                fprintf(ctl->log, "notice: %s exists but --resume was not given: starting over (it is "
                                  "replaced at the first checkpoint)\n", ctl->checkpoint);
            }
        }
        if (ae_dist_bcast(run.d, lrc, st.v, (size_t)nw * st.per * sizeof *st.v, err)) goto done;
    }
    if (o->device == AE_DEV_CUDA) rc = eval_ppl_stored(m, tokens, nw, o, &run, &st, res, err);
    else rc = eval_ppl_cpu(m, tokens, nw, o, &run, &st, res, err);
    /* every rank's windows to every rank, then the sums in window order */
    if (ae_dist_allgather_blocks(run.d, rc, st.v, nw, st.per, err)) { rc = -1; goto done; }
    double ref_s = 0;
    for (long w = 0; w < nw; w++) ref_s += st_win(&st, w)[1];
    res->ref_nll = ref_s / (double)res->scored;
    for (int k = 0; k < o->n_modes; k++) {
        ae_ppl_mode_result *r = &res->modes[k];
        if (!r->applicable) continue;
        acc_t a;
        st_total(&st, k, &a);
        acc_finish(&a, r);
    }
    rc = 0;
done:
    free(st.v);
    free(args);
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
#include "ak.h"   /* ak_device_count: the rank's GPU */

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
    char partial[AX_PATH_LEN] = "";
    const int rank0 = ae_dist_rank(job->dist) == 0;
    if (!rank0) { table = NULL; log = NULL; }   /* rank 0 prints; every rank returns its errors */

    /* everything that can be checked without work first: --out (else an unwritable path fails
     * after the whole evaluation), empty paths */
    if (job->out && ax_check_out_path(job->out, "--out", err)) return -1;
    if (job->tokenizer && !*job->tokenizer) { SETERR("--tokenizer: empty path"); return -1; }
    if (job->tokenizer && strlen(job->tokenizer) >= AX_PATH_LEN) { SETERR("--tokenizer: path too long"); return -1; }
    const char *dataset = job->dataset ? job->dataset : "wikitext2";
    if (strcmp(dataset, "wikitext2")) { SETERR("--dataset: unknown dataset '%s' (known: wikitext2)", dataset); return -1; }
    if (!job->model_dir) { SETERR("--model DIR is required"); return -1; }
    if (job->resume && !job->out) { SETERR("--resume needs --out OUT (the checkpoint is OUT.partial)"); return -1; }
    if (job->out && (size_t)snprintf(partial, sizeof partial, "%s.partial", job->out) >= sizeof partial) {
        SETERR("--out: path too long");
        return -1;
    }
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
    jo.dist = job->dist;
    jo.layer_major = job->layer_major;       /* the calibration engine on cuda too */
    jo.gpu_mem_limit = job->gpu_mem_limit;
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
                     job->progress && rank0, job->device};
    /* checkpoints: what the numbers depend on besides the options and the tokens */
    char key[3 * AX_PATH_LEN];
    snprintf(key, sizeof key, "model=%.1000s|dtype=%s|tokenizer=%.1000s|dataset=wikitext2 test %s|calibration=%.1000s",
             job->model_dir, m->dtype, jb->tokenizer_path, txt.sha256, jb->calib ? jb->calib_path : "none");
    ae_ppl_ctl ctl = {job->dist, job->out ? partial : NULL,
                      job->checkpoint_every == 0 ? AE_PPL_CHECKPOINT_EVERY
                                                 : job->checkpoint_every < 0 ? 0 : (double)job->checkpoint_every,
                      job->resume, key, log, job->layer_major, job->gpu_mem_limit,
                      job->device == AE_DEV_CUDA ? ae_dist_gpu(job->dist, ak_device_count()) : 0};
    if (ae_eval_ppl_ctl(m, ids, n_ids, &o, &ctl, &res, err)) goto done;
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
    if (job->out && rank0) {
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
        if (job->device == AE_DEV_CUDA) {
            cJSON_AddBoolToObject(doc, "layer_major", res.layer_major != 0);
            if (job->gpu_mem_limit) cJSON_AddNumberToObject(doc, "gpu_mem_limit_bytes", (double)job->gpu_mem_limit);
            else cJSON_AddNullToObject(doc, "gpu_mem_limit_bytes");
        }
        cJSON_AddStringToObject(doc, "reference", "fp16: the checkpoint's values in fp32, fp32 compute, no KV quantization");
        cJSON_AddNumberToObject(doc, "reference_ppl", exp(res.ref_nll));
        cJSON_AddNumberToObject(doc, "reference_seconds", res.ref_seconds);
        cJSON_AddItemToObject(doc, "modes", result_json(&res));
        cJSON_AddNumberToObject(doc, "seconds", wall);
        cJSON_AddNumberToObject(doc, "checkpoint_every_s", ctl.checkpoint_every);
        cJSON_AddBoolToObject(doc, "resumed", job->resume != 0);
        if (ax_write_json(job->out, doc, err)) goto done;
        if (log) fprintf(log, "wrote %s\n", job->out);
        if (remove(partial) != 0 && errno != ENOENT && log)   /* the checkpoint is no longer needed */
            fprintf(log, "warning: could not remove %s: %s\n", partial, strerror(errno));
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
