/* zeroshot.c — lm-eval style zero-shot scoring, runner loop and results (see zeroshot.h). */
#include "zeroshot.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "job.h"
#include "model.h"
#include "ustr.h"


/* Prefix err with "what: ". */
static void prefix_err(char *err, const char *fmt, ...) {
    if (!err) return;
    char head[AX_ERR_LEN], tail[AX_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    snprintf(tail, sizeof tail, "%s", err);
    snprintf(err, AX_ERR_LEN, "%.200s: %.300s", head, tail);
}

/* ---- scoring ------------------------------------------------------------------------------------- */
int ae_zs_score_rows(const float *rows, int n, int vocab, const int *cont, double *ll, int *greedy,
                     char *err) {
    double sum_ll = 0.0;
    int all_greedy = 1;
    for (int i = 0; i < n; i++) {
        const float *x = rows + (size_t)i * (size_t)vocab;
        int t = cont[i];
        if (t < 0 || t >= vocab) {
            ax_seterr(err, "continuation token %d (position %d) outside the vocabulary [0, %d)", t, i, vocab);
            return -1;
        }
        /* log_softmax(x)[t] = x[t] - max - log Σ exp(x - max), accumulated in double */
        float m = x[0];
        int am = 0;
        for (int v = 1; v < vocab; v++)
            if (x[v] > m) { m = x[v]; am = v; }   /* strict: the first maximum wins, as argmax */
        double s = 0.0;
        for (int v = 0; v < vocab; v++) s += (double)expf(x[v] - m);
        if (!isfinite(m) || !isfinite(s)) {
            ax_seterr(err, "non-finite logits at continuation position %d", i);
            return -1;
        }
        sum_ll += ((double)x[t] - (double)m) - log(s);
        if (am != t) all_greedy = 0;
    }
    *ll = sum_ll;
    *greedy = all_greedy;
    return 0;
}

void ae_zs_decide(const double *lls, const double *len, int n, int *pred, int *pred_norm) {
    int p = 0, q = 0;
    for (int i = 1; i < n; i++) {
        if (lls[i] > lls[p]) p = i;
        if (lls[i] / len[i] > lls[q] / len[q]) q = i;
    }
    *pred = p;
    *pred_norm = q;
}

void ae_zs_mean_stderr(const double *x, long n, double *mean, double *stderr_) {
    double s = 0.0;
    for (long i = 0; i < n; i++) s += x[i];
    double mu = n > 0 ? s / (double)n : NAN;
    double ss = 0.0;
    for (long i = 0; i < n; i++) ss += (x[i] - mu) * (x[i] - mu);
    *mean = mu;
    *stderr_ = n > 1 ? sqrt(ss / (double)(n - 1)) / sqrt((double)n) : NAN;
}

/* ---- encoding ------------------------------------------------------------------------------------ */
static int prefix_token(const ae_tokenizer *tok) {
    int b = ae_tokenizer_bos(tok);
    return b >= 0 ? b : ae_tokenizer_eos(tok);
}

int ae_zs_encode_pair(const ae_tokenizer *tok, const char *context, const char *continuation,
                      int add_bos, ae_zs_ids *out, char *err) {
    memset(out, 0, sizeof *out);
    size_t lc = strlen(context), lk = strlen(continuation);
    int *whole = NULL, *ctx = NULL;
    size_t nw = 0, nc = 0;
    if (lc == 0) {
        /* TemplateLM.loglikelihood: context "" -> ([prefix_token_id], tok_encode(continuation)) */
        if (ae_tokenize(tok, continuation, lk, 0, &whole, &nw, err)) return -1;
    } else {
        /* n_spaces = len(context) - len(context.rstrip()): Python's (Unicode) whitespace */
        size_t keep = ad_py_rstrip_len(context, lc);
        char *joined = malloc(lc + lk + 1);
        if (!joined) { ax_seterr(err, "out of memory"); return -1; }
        memcpy(joined, context, lc);
        memcpy(joined + lc, continuation, lk + 1);
        /* whole = enc(context + continuation) (the moved spaces sit between them either way) */
        int rc = ae_tokenize(tok, joined, lc + lk, add_bos, &whole, &nw, err);
        free(joined);
        if (rc) return -1;
        if (keep > 0 || add_bos) {
            if (ae_tokenize(tok, context, keep, add_bos, &ctx, &nc, err)) { free(whole); return -1; }
        }
        if (nc > nw) nc = nw;   /* continuation = whole[len(ctx):] is then empty: reported below */
        /* continuation tokens: whole[len(ctx):]; the context fed to the model is ctx itself */
        memmove(whole, whole + nc, (nw - nc) * sizeof *whole);
        nw -= nc;
    }
    if (nw == 0) {
        ax_seterr(err, "continuation '%.60s' encodes to no tokens after the context", continuation);
        free(whole); free(ctx);
        return -1;
    }
    if (nc == 0) {   /* empty context: [prefix_token_id] as lm-eval does */
        free(ctx);
        ctx = malloc(sizeof *ctx);
        if (!ctx) { free(whole); ax_seterr(err, "out of memory"); return -1; }
        ctx[0] = prefix_token(tok);
        nc = 1;
        if (ctx[0] < 0) { free(ctx); free(whole); ax_seterr(err, "empty context and the tokenizer has neither BOS nor EOS"); return -1; }
    }
    out->ctx = ctx;   out->n_ctx = (int)nc;
    out->cont = whole; out->n_cont = (int)nw;
    return 0;
}

void ae_zs_encoded_free(ae_zs_encoded *e) {
    if (!e) return;
    if (e->req)
        for (long i = 0; i < e->set->n_requests; i++) { free(e->req[i].ctx); free(e->req[i].cont); }
    free(e->req);
    free(e->first);
    free(e);
}

int ae_zs_encode_set(const ae_tokenizer *tok, const ad_zs_set *set, int add_bos,
                     ae_zs_encoded **out, char *err) {
    *out = NULL;
    ae_zs_encoded *e = calloc(1, sizeof *e);
    if (!e) { ax_seterr(err, "out of memory"); return -1; }
    e->set = set;
    e->req = calloc((size_t)(set->n_requests > 0 ? set->n_requests : 1), sizeof *e->req);
    e->first = calloc((size_t)set->n_docs + 1, sizeof *e->first);
    if (!e->req || !e->first) { ae_zs_encoded_free(e); ax_seterr(err, "out of memory"); return -1; }
    long r = 0;
    for (int d = 0; d < set->n_docs; d++) {
        e->first[d] = (int)r;
        for (int j = 0; j < set->docs[d].n_req; j++, r++) {
            const ad_zs_request *q = &set->docs[d].req[j];
            if (ae_zs_encode_pair(tok, q->context, q->continuation, add_bos, &e->req[r], err)) {
                prefix_err(err, "task %s, document %d, choice %d", set->task->name, d + 1, j + 1);
                ae_zs_encoded_free(e);
                return -1;
            }
            e->n_tokens += e->req[r].n_ctx + e->req[r].n_cont;
        }
    }
    e->first[set->n_docs] = (int)r;
    *out = e;
    return 0;
}

/* ---- the LM over an ae_engine -------------------------------------------------------------------- */
static int engine_loglik(void *ctx, const int *tokens, const int *offsets, int n_seqs, const int *targets,
                         double *logp, int *greedy, char *err) {
    return ae_engine_loglik_packed((ae_engine *)ctx, tokens, offsets, n_seqs, targets, logp, greedy, err);
}

static void engine_reset(void *ctx) { ae_engine_truncate((ae_engine *)ctx, 0); }

ae_zs_lm ae_zs_lm_from_engine(ae_engine *e, int max_len, int batch_tokens, int batch_seqs) {
    const ae_engine_opts *eo = ae_engine_opts_of(e);
    ae_zs_lm lm;
    lm.ctx = e;
    lm.vocab = ae_engine_model(e)->cfg.vocab_size;
    lm.max_len = max_len < eo->max_seq ? max_len : eo->max_seq;
    lm.batch_tokens = batch_tokens > 0 ? batch_tokens : AE_ZS_BATCH_TOKENS;
    lm.batch_seqs = batch_seqs > 0 ? batch_seqs
                  : eo->device == AE_DEV_CUDA ? AE_ZS_BATCH_SEQS_CUDA : AE_ZS_BATCH_SEQS_CPU;
    lm.loglik = engine_loglik;
    lm.reset = engine_reset;
    return lm;
}

/* ---- the request loop ---------------------------------------------------------------------------- */
/* One packed call's worth of requests. */
typedef struct {
    int    *tok, *tgt, *off; /* (cap_tok) tokens and targets, (cap_seq + 1) offsets            */
    double *logp;            /* (cap_tok)                                                      */
    int    *grd;             /* (cap_tok)                                                      */
    long   *req;             /* (cap_seq) request index of each packed sequence                */
    int    *doc;             /* (cap_seq) its document                                         */
    int     n, ntok;         /* sequences and tokens packed                                    */
} zs_batch;

/* Run the packed sequences, sum each one's scored log-probabilities (in position order) into
 * lls [request], AND its greedy flags into gr [request]. */
static int flush_batch(const ae_zs_lm *lm, zs_batch *b, const char *tname, double *lls, int *gr, char *err) {
    if (b->n == 0) return 0;
    if (lm->loglik(lm->ctx, b->tok, b->off, b->n, b->tgt, b->logp, b->grd, err)) {
        if (b->doc[0] == b->doc[b->n - 1]) prefix_err(err, "task %s, document %d", tname, b->doc[0] + 1);
        else prefix_err(err, "task %s, documents %d..%d", tname, b->doc[0] + 1, b->doc[b->n - 1] + 1);
        return -1;
    }
    for (int i = 0; i < b->n; i++) {
        double ll = 0.0;
        int g = 1;
        for (int j = b->off[i]; j < b->off[i + 1]; j++)
            if (b->tgt[j] >= 0) { ll += b->logp[j]; g &= b->grd[j] != 0; }
        lls[b->req[i]] = ll;
        gr[b->req[i]] = g;
    }
    b->n = b->ntok = 0;
    b->off[0] = 0;
    return 0;
}

int ae_zs_eval_encoded(const ae_zs_lm *lm, const ae_zs_encoded *e, ae_zs_result *res,
                       ae_zs_req_score *per_req, ae_zs_progress_fn progress, void *progress_ctx,
                       long progress_base, char *err) {
    return ae_zs_eval_encoded_dist(lm, e, NULL, res, per_req, progress, progress_ctx, progress_base, err);
}

int ae_zs_eval_encoded_dist(const ae_zs_lm *lm, const ae_zs_encoded *e, ae_dist *dist, ae_zs_result *res,
                            ae_zs_req_score *per_req, ae_zs_progress_fn progress, void *progress_ctx,
                            long progress_base, char *err) {
    const ad_zs_set *set = e->set;
    const char *tname = set->task->name;
    double t0 = ax_now();
    memset(res, 0, sizeof *res);
    res->acc = res->acc_stderr = res->acc_norm = res->acc_norm_stderr = NAN;
    res->ppl = res->ppl_stderr = res->mean_ll = NAN;
    const int maxlen = lm->max_len;
    const long nreq = set->n_requests;
    int max_seq = 1;
    for (long r = 0; r < nreq; r++) {
        const ae_zs_ids *q = &e->req[r];
        int L = q->n_ctx + q->n_cont - 1;
        if (L > max_seq) max_seq = L;
    }
    if (max_seq > maxlen) max_seq = maxlen;
    int cap_seq = lm->batch_seqs > 0 ? lm->batch_seqs : 1;
    if (cap_seq > nreq) cap_seq = nreq > 0 ? (int)nreq : 1;
    long cap_tok_l = lm->batch_tokens > max_seq ? lm->batch_tokens : max_seq;  /* one sequence always fits */
    if (cap_tok_l > (long)cap_seq * max_seq) cap_tok_l = (long)cap_seq * max_seq;
    size_t cap_tok = (size_t)cap_tok_l;
    zs_batch b;
    memset(&b, 0, sizeof b);
    b.tok = malloc(cap_tok * sizeof *b.tok);
    b.tgt = malloc(cap_tok * sizeof *b.tgt);
    b.logp = malloc(cap_tok * sizeof *b.logp);
    b.grd = malloc(cap_tok * sizeof *b.grd);
    b.off = malloc(((size_t)cap_seq + 1) * sizeof *b.off);
    b.req = malloc((size_t)cap_seq * sizeof *b.req);
    b.doc = malloc((size_t)cap_seq * sizeof *b.doc);
    double *lls = malloc((size_t)(nreq + 1) * sizeof *lls);
    int *gr = malloc((size_t)(nreq + 1) * sizeof *gr);
    char *skip = calloc((size_t)set->n_docs + 1, 1);
    double *x_acc = malloc((size_t)(set->n_docs + 1) * sizeof *x_acc);
    double *x_norm = malloc((size_t)(set->n_docs + 1) * sizeof *x_norm);
    double *x_ll = malloc((size_t)(set->n_docs + 1) * sizeof *x_ll);
    long *order = malloc((size_t)(nreq + 1) * sizeof *order);      /* scored requests in order      */
    long *pstart = malloc((size_t)(nreq + 2) * sizeof *pstart);    /* pack p: order[pstart[p] ..)   */
    int *rdoc = malloc((size_t)(nreq + 1) * sizeof *rdoc);         /* each request's document       */
    double *vals = malloc((size_t)(2 * nreq + 2) * sizeof *vals);   /* (ll, greedy) in `order` order  */
    long *gstart = malloc((size_t)(nreq + 2) * sizeof *gstart);    /* group g: packs [gstart[g], ..) */
    int rc = 0;
    if (!b.tok || !b.tgt || !b.logp || !b.grd || !b.off || !b.req || !b.doc || !lls || !gr || !skip ||
        !x_acc || !x_norm || !x_ll || !order || !pstart || !rdoc || !vals || !gstart) {
        ax_seterr(err, "task %s: out of memory (a pack of %zu tokens)", tname, cap_tok);
        rc = -1;
    }
    if (ae_dist_agree(dist, rc, NULL, err)) { rc = -1; goto done; }
    b.off[0] = 0;
    if (per_req)
        for (long r = 0; r < nreq; r++) {
            per_req[r].ll = NAN;
            per_req[r].greedy = 0;
            per_req[r].scored = 0;
        }
    /* The packs: the scored requests in document order, cut greedily into calls of at most cap_seq
     * sequences and cap_tok tokens; a document starts a new call when its requests do not all fit in
     * the current one (it is split only when it alone exceeds the budget). The cuts depend on the
     * task and the budgets only. A group is a call that starts at a document's first request plus
     * the calls continuing that document: each group starts from an empty KV cache (lm->reset; inside
     * a group the cpu engine reuses a shared prefix as before), and ranks take contiguous blocks of
     * groups (ae_dist_block), so a request's score does not depend on the number of ranks. */
    long n_order = 0, n_packs = 0, n_groups = 0, cur_seq = 0, cur_tok = 0;
    pstart[0] = 0;
    for (int d = 0; d < set->n_docs; d++) {
        const ad_zs_doc *doc = &set->docs[d];
        int too_long = 0;
        long doc_tok = 0;
        for (int j = 0; j < doc->n_req; j++) {
            const ae_zs_ids *q = &e->req[e->first[d] + j];
            int total = q->n_ctx + q->n_cont - 1;
            too_long |= q->n_cont > maxlen;
            doc_tok += total > maxlen ? maxlen : total;
        }
        if (too_long) {
            skip[d] = 1;
            res->skipped++;
            continue;
        }
        if (cur_seq > 0 && (cur_seq + doc->n_req > cap_seq || (size_t)(cur_tok + doc_tok) > cap_tok)) {
            pstart[++n_packs] = n_order;
            cur_seq = cur_tok = 0;
        }
        for (int j = 0; j < doc->n_req; j++) {
            long r = e->first[d] + j;
            const ae_zs_ids *q = &e->req[r];
            int total = q->n_ctx + q->n_cont - 1, L = total > maxlen ? maxlen : total;
            if (cur_seq > 0 && (cur_seq == cap_seq || (size_t)cur_tok + (size_t)L > cap_tok)) {
                pstart[++n_packs] = n_order;
                cur_seq = cur_tok = 0;
            }
            if (cur_seq == 0 && j == 0) gstart[n_groups++] = n_packs;   /* a call from a document start */
            rdoc[r] = d;
            order[n_order++] = r;
            cur_seq++;
            cur_tok += L;
            res->tokens += L;
        }
    }
    if (cur_seq > 0) pstart[++n_packs] = n_order;
    gstart[n_groups] = n_packs;
    long glo, ghi;
    const int size = ae_dist_size(dist);
    ae_dist_block(n_groups, ae_dist_rank(dist), size, &glo, &ghi);
    long steps = ae_dist_max_block(n_groups, size), handled = 0;
    for (long s = 0; s < steps; s++) {
        long g = glo + s;
        int lrc = 0;
        for (long p = g < ghi ? gstart[g] : 0; g < ghi && p < gstart[g + 1] && !lrc; p++) {
            for (long i = pstart[p]; i < pstart[p + 1]; i++) {
                long r = order[i];
                const ae_zs_ids *q = &e->req[r];
                int nc = q->n_ctx, nn = q->n_cont;
                /* HFLM._loglikelihood_tokens: inp = (ctx + cont)[-(max_length+1):][:-1] */
                int total = nc + nn - 1, drop = total > maxlen ? total - maxlen : 0;
                int Lc = nc - drop, L = total - drop;     /* Lc >= 1 since nn <= maxlen */
                int *sq = b.tok + b.ntok, *tg = b.tgt + b.ntok;
                memcpy(sq, q->ctx + drop, (size_t)Lc * sizeof *sq);
                memcpy(sq + Lc, q->cont, (size_t)(nn - 1) * sizeof *sq);
                /* position Lc-1+i predicts cont[i]; the context positions are not scored */
                for (int t = 0; t < Lc - 1; t++) tg[t] = -1;
                memcpy(tg + Lc - 1, q->cont, (size_t)nn * sizeof *tg);
                b.req[b.n] = r;
                b.doc[b.n] = rdoc[r];
                b.ntok += L;
                b.off[++b.n] = b.ntok;
            }
            if (p == gstart[g] && lm->reset) lm->reset(lm->ctx);
            lrc = flush_batch(lm, &b, tname, lls, gr, err);
            for (long i = pstart[p]; i < pstart[p + 1] && !lrc; i++) {
                vals[2 * i] = lls[order[i]];
                vals[2 * i + 1] = gr[order[i]];
            }
            handled += pstart[p + 1] - pstart[p];
            /* the bar counts this rank's share times the ranks (its estimate of the whole) */
            if (!lrc && progress) progress(progress_ctx, progress_base + (handled * size < nreq ? handled * size : nreq));
        }
        if (size > 1 && ae_dist_agree(dist, lrc, NULL, err)) { rc = -1; goto done; }
        if (lrc) { rc = -1; goto done; }
    }
    /* every rank's groups to every rank (group g holds vals[2*pstart[gstart[g]] .. 2*pstart[gstart[g+1]])) */
    if (size > 1) {
        long *voff = malloc((size_t)(n_groups + 1) * sizeof *voff);
        if (voff)
            for (long g = 0; g <= n_groups; g++) voff[g] = 2 * pstart[gstart[g]];
        else ax_seterr(err, "task %s: out of memory", tname);
        rc = ae_dist_allgather_ranges(dist, voff ? 0 : -1, vals, voff, n_groups, err);
        free(voff);
        if (rc) goto done;
        for (long i = 0; i < n_order; i++) {
            lls[order[i]] = vals[2 * i];
            gr[order[i]] = vals[2 * i + 1] != 0;
        }
    }
    if (progress) progress(progress_ctx, progress_base + nreq);
    long nd = 0, done_req = 0;   /* nd: documents scored */
    for (int d = 0; d < set->n_docs; d++) {
        const ad_zs_doc *doc = &set->docs[d];
        done_req += doc->n_req;
        if (skip[d]) continue;
        const double *dl = lls + e->first[d];
        const int *dg = gr + e->first[d];
        if (per_req)
            for (int j = 0; j < doc->n_req; j++) {
                ae_zs_req_score *ps = &per_req[e->first[d] + j];
                ps->ll = dl[j];
                ps->greedy = dg[j];
                ps->scored = 1;
            }
        if (set->task->kind == AD_ZS_LOGLIKELIHOOD) {
            x_acc[nd] = dg[0] ? 1.0 : 0.0;    /* lambada acc: is_greedy */
            x_ll[nd] = dl[0];
            x_norm[nd] = 0.0;
        } else {
            int pred, pred_norm;
            ae_zs_decide(dl, doc->choice_len, doc->n_req, &pred, &pred_norm);
            x_acc[nd] = pred == doc->gold ? 1.0 : 0.0;
            x_norm[nd] = pred_norm == doc->gold ? 1.0 : 0.0;
            x_ll[nd] = dl[doc->gold];
        }
        nd++;
    }
    if (nd == 0) {
        ax_seterr(err, "task %s: all %d documents have a continuation longer than the model's %d positions",
               tname, set->n_docs, maxlen);
        rc = -1;
        goto done;
    }
    unsigned m = set->task->metrics;
    res->n = nd;
    res->requests = done_req;
    if (m & AD_ZS_ACC) ae_zs_mean_stderr(x_acc, nd, &res->acc, &res->acc_stderr);
    if (m & AD_ZS_ACC_NORM) ae_zs_mean_stderr(x_norm, nd, &res->acc_norm, &res->acc_norm_stderr);
    double se_ll;
    ae_zs_mean_stderr(x_ll, nd, &res->mean_ll, &se_ll);
    if (m & AD_ZS_PPL) {
        res->ppl = exp(-res->mean_ll);       /* metrics.py perplexity: exp(-mean(items)) */
        res->ppl_stderr = res->ppl * se_ll;  /* delta method (lm-eval bootstraps instead) */
    }
done:
    free(b.tok); free(b.tgt); free(b.logp); free(b.grd); free(b.off); free(b.req); free(b.doc);
    free(lls); free(gr); free(skip); free(x_acc); free(x_norm); free(x_ll);
    free(order); free(pstart); free(rdoc); free(vals); free(gstart);
    res->seconds = ax_now() - t0;
    return rc;
}

/* ---- the whole evaluation ------------------------------------------------------------------------ */
static void put_num(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

typedef struct { ax_progress bar; } zs_progress;
static void progress_cb(void *ctx, long done) { ax_progress_update(&((zs_progress *)ctx)->bar, done); }

/* The Atom/QuaRot average: acc_norm where the task defines it, else acc. */
static double task_headline(const ad_zs_task *t, const ae_zs_result *r) {
    return (t->metrics & AD_ZS_ACC_NORM) ? r->acc_norm : r->acc;
}

/* --log-samples: one JSON line per request of task set e under `mode` (see ae_zs_opts). */
static int write_samples(FILE *f, const char *path, const char *mode, const ae_zs_encoded *e,
                         const ae_zs_req_score *sc, char *err) {
    const ad_zs_set *set = e->set;
    for (int d = 0; d < set->n_docs; d++) {
        const ad_zs_doc *doc = &set->docs[d];
        for (int j = 0; j < doc->n_req; j++) {
            long r = e->first[d] + j;
            const ae_zs_ids *q = &e->req[r];
            cJSON *o = cJSON_CreateObject();
            int ok = o != NULL;
            ok = ok && cJSON_AddStringToObject(o, "mode", mode);
            ok = ok && cJSON_AddStringToObject(o, "task", set->task->name);
            ok = ok && cJSON_AddNumberToObject(o, "doc", d);
            ok = ok && cJSON_AddNumberToObject(o, "choice", j);
            ok = ok && cJSON_AddStringToObject(o, "context", doc->req[j].context);
            ok = ok && cJSON_AddStringToObject(o, "continuation", doc->req[j].continuation);
            cJSON *ci = ok ? cJSON_CreateIntArray(q->ctx, q->n_ctx) : NULL;
            ok = ok && ci && cJSON_AddItemToObject(o, "ctx_ids", ci);
            if (!ok) cJSON_Delete(ci);
            cJSON *ki = ok ? cJSON_CreateIntArray(q->cont, q->n_cont) : NULL;
            ok = ok && ki && cJSON_AddItemToObject(o, "cont_ids", ki);
            if (!ok) cJSON_Delete(ki);
            if (sc[r].scored) {
                ok = ok && cJSON_AddNumberToObject(o, "ll", sc[r].ll);
                ok = ok && cJSON_AddBoolToObject(o, "greedy", sc[r].greedy != 0);
            } else {   /* a document left out (continuation longer than max_length) */
                ok = ok && cJSON_AddNullToObject(o, "ll");
                ok = ok && cJSON_AddNullToObject(o, "greedy");
            }
            ok = ok && cJSON_AddBoolToObject(o, "skipped", !sc[r].scored);
            ok = ok && cJSON_AddNumberToObject(o, "choice_len", doc->choice_len[j]);
            ok = ok && cJSON_AddNumberToObject(o, "gold", doc->gold);
            char *line = ok ? cJSON_PrintUnformatted(o) : NULL;
            cJSON_Delete(o);
            if (!line) { ax_seterr(err, "%s: out of memory writing a sample line", path); return -1; }
            fputs(line, f);
            fputc('\n', f);
            free(line);
        }
    }
    if (ferror(f)) { ax_seterr(err, "%s: write error", path); return -1; }
    return 0;
}

int ae_zs_run(const ae_zs_opts *o, cJSON **doc_out, char *err) {
    *doc_out = NULL;
    const int rank0 = ae_dist_rank(o->dist) == 0;
    FILE *log = rank0 ? o->log : NULL;   /* rank 0 logs; every rank returns its errors */
    double t_start = ax_now();
    char root[AX_PATH_LEN];
    if (o->n_tasks < 1 || o->n_modes < 1) { ax_seterr(err, "no tasks or no modes given"); return -1; }
    if (o->log_samples && ax_check_out_path(o->log_samples, "--log-samples", err)) return -1;
    /* validate names before any heavy work (and before looking for the data root) */
    aq_mode *modes = calloc((size_t)o->n_modes, sizeof *modes);
    const ad_zs_task **tasks = calloc((size_t)o->n_tasks, sizeof *tasks);
    ad_zs_set **sets = calloc((size_t)o->n_tasks, sizeof *sets);
    ae_zs_encoded **enc = calloc((size_t)o->n_tasks, sizeof *enc);
    ae_zs_result *res = calloc((size_t)o->n_tasks, sizeof *res);
    ae_job *job = NULL;
    ae_engine *engine = NULL;
    cJSON *doc = NULL, *jt = NULL, *jr = NULL;
    FILE *samples = NULL;
    char samples_tmp[AX_PATH_LEN] = "";
    ae_zs_req_score *scores = NULL;
    int rc = -1;
    if (!modes || !tasks || !sets || !enc || !res) { ax_seterr(err, "out of memory"); goto out; }
    for (int i = 0; i < o->n_modes; i++)
        if (aq_mode_parse(o->modes[i], &modes[i], err)) { prefix_err(err, "--modes"); goto out; }
    for (int i = 0; i < o->n_tasks; i++) {
        if (!(tasks[i] = ad_zs_task_find(o->tasks[i]))) {
            char list[256] = "";
            for (int k = 0; ad_zs_tasks[k].name; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", ad_zs_tasks[k].name);
            ax_seterr(err, "unknown task '%s' (known: %s)", o->tasks[i], list);
            goto out;
        }
        for (int k = 0; k < i; k++)
            if (tasks[k] == tasks[i]) { ax_seterr(err, "task '%s' given twice", o->tasks[i]); goto out; }
    }
    /* the data first: a bad data file is reported before a model is read */
    long max_req = 1;
    if (o->data_root) snprintf(root, sizeof root, "%s", o->data_root);
    else if (ax_data_root(root, sizeof root, err)) goto out;
    for (int i = 0; i < o->n_tasks; i++) {
        if (ad_zs_load(tasks[i], root, o->limit, &sets[i], err)) goto out;
        if (log && tasks[i]->alt_file)
            fprintf(log, "%s: %s (%s)\n", tasks[i]->name, sets[i]->variant, sets[i]->path);
        if (sets[i]->n_requests > max_req) max_req = sets[i]->n_requests;
    }
    /* model, tokenizer (and its check), calibration and engines: the job policy (eval/job.h) */
    ae_job_opts jo;
    memset(&jo, 0, sizeof jo);
    jo.model_dir = o->model_dir;
    jo.tokenizer = o->tokenizer;
    jo.out = o->out;
    jo.calib_dir = o->calib_dir;
    jo.calib_windows = o->calib_windows;
    jo.device = o->device;
    jo.gemm = o->gemm;
    jo.kv4 = o->kv4;
    jo.nthreads = o->nthreads;
    jo.log = log;
    jo.dist = o->dist;
    if (ae_job_open(&jo, &job, err)) goto out;
    const ae_model *m = job->model;
    long total_req = 0;
    int max_seq = 1;
    for (int i = 0; i < o->n_tasks; i++) {
        if (ae_zs_encode_set(job->tok, sets[i], o->bos, &enc[i], err)) goto out;
        total_req += sets[i]->n_requests;
        for (long r = 0; r < sets[i]->n_requests; r++) {
            int L = enc[i]->req[r].n_ctx + enc[i]->req[r].n_cont - 1;
            if (L > max_seq) max_seq = L;
        }
    }
    if (max_seq > m->cfg.max_pos) max_seq = m->cfg.max_pos;
    if (ae_job_calibrate(job, modes, o->n_modes, err)) goto out;

    if (o->log_samples) {
        scores = calloc((size_t)max_req, sizeof *scores);
        if (!scores) { ax_seterr(err, "out of memory"); goto out; }
        if (rank0 && !(samples = ax_atomic_open(o->log_samples, samples_tmp, err))) goto out;
    }

    jt = cJSON_CreateArray();
    jr = cJSON_CreateArray();
    if (!jt || !jr) { ax_seterr(err, "out of memory"); goto out; }
    for (int i = 0; i < o->n_tasks; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", tasks[i]->name);
        cJSON_AddStringToObject(t, "file", sets[i]->path);
        cJSON_AddStringToObject(t, "sha256", sets[i]->sha256);
        cJSON_AddStringToObject(t, "prompts", sets[i]->variant);
        cJSON_AddStringToObject(t, "source", tasks[i]->source);
        cJSON_AddNumberToObject(t, "docs", sets[i]->n_docs);
        cJSON_AddNumberToObject(t, "docs_in_file", sets[i]->n_total);
        cJSON_AddNumberToObject(t, "requests", (double)sets[i]->n_requests);
        cJSON_AddNumberToObject(t, "tokens", (double)enc[i]->n_tokens);
        cJSON *mt = cJSON_AddArrayToObject(t, "metrics");
        if (tasks[i]->metrics & AD_ZS_ACC) cJSON_AddItemToArray(mt, cJSON_CreateString("acc"));
        if (tasks[i]->metrics & AD_ZS_ACC_NORM) cJSON_AddItemToArray(mt, cJSON_CreateString("acc_norm"));
        if (tasks[i]->metrics & AD_ZS_PPL) cJSON_AddItemToArray(mt, cJSON_CreateString("perplexity"));
        cJSON_AddItemToArray(jt, t);
    }
    int first_applicable = -1;
    for (int mi = 0; mi < o->n_modes; mi++) {
        cJSON *jmode = cJSON_CreateObject();
        cJSON_AddItemToArray(jr, jmode);
        cJSON_AddStringToObject(jmode, "mode", modes[mi].name);
        char merr[AX_ERR_LEN];
        if (ae_mode_check(m, &modes[mi], merr)) {
            cJSON_AddBoolToObject(jmode, "applicable", 0);
            cJSON_AddStringToObject(jmode, "reason", merr);
            if (log) fprintf(log, "%s: not applicable: %s\n", modes[mi].name, merr);
            continue;
        }
        cJSON_AddBoolToObject(jmode, "applicable", 1);
        if (first_applicable < 0) first_applicable = mi;
        double t0 = ax_now();
        int erc = ae_job_engine_new(job, &modes[mi], max_seq, &engine, err) ? -1 : 0;
        if (ae_dist_agree(o->dist, erc, NULL, err)) goto out;
        ae_zs_lm lm = ae_zs_lm_from_engine(engine, max_seq, o->batch_tokens, o->batch_seqs);
        zs_progress pg;
        if (rank0) ax_progress_start(&pg.bar, modes[mi].name, total_req, "req");
        long base = 0;
        for (int i = 0; i < o->n_tasks; i++) {
            if (ae_zs_eval_encoded_dist(&lm, enc[i], o->dist, &res[i], scores, rank0 ? progress_cb : NULL, &pg,
                                        base, err)) {
                if (rank0) ax_progress_end(&pg.bar, base);
                prefix_err(err, "mode %s", modes[mi].name);
                goto out;
            }
            if (samples && write_samples(samples, o->log_samples, modes[mi].name, enc[i], scores, err))
                goto out;
            base += sets[i]->n_requests;
        }
        if (rank0) ax_progress_end(&pg.bar, base);
        ae_engine_free(engine);
        engine = NULL;
        double secs = ax_now() - t0, avg = 0.0;
        cJSON *jts = cJSON_AddObjectToObject(jmode, "tasks");
        for (int i = 0; i < o->n_tasks; i++) {
            cJSON *t = cJSON_AddObjectToObject(jts, tasks[i]->name);
            unsigned mt = tasks[i]->metrics;
            if (mt & AD_ZS_ACC) { put_num(t, "acc", res[i].acc); put_num(t, "acc_stderr", res[i].acc_stderr); }
            if (mt & AD_ZS_ACC_NORM) {
                put_num(t, "acc_norm", res[i].acc_norm);
                put_num(t, "acc_norm_stderr", res[i].acc_norm_stderr);
            }
            if (mt & AD_ZS_PPL) {
                put_num(t, "perplexity", res[i].ppl);
                put_num(t, "perplexity_stderr", res[i].ppl_stderr);
            }
            put_num(t, "mean_ll_gold", res[i].mean_ll);
            cJSON_AddNumberToObject(t, "n", (double)res[i].n);
            cJSON_AddNumberToObject(t, "skipped", (double)res[i].skipped);
            if (res[i].skipped && log && mi == first_applicable)
                fprintf(log, "%s: %ld of %d documents left out: a continuation is longer than the "
                                "model's %d positions\n", tasks[i]->name, res[i].skipped,
                        sets[i]->n_docs, max_seq);
            cJSON_AddNumberToObject(t, "requests", (double)res[i].requests);
            cJSON_AddNumberToObject(t, "tokens_forwarded", (double)res[i].tokens);
            cJSON_AddNumberToObject(t, "seconds", res[i].seconds);
            avg += task_headline(tasks[i], &res[i]);
        }
        put_num(jmode, "average", avg / o->n_tasks);
        cJSON_AddNumberToObject(jmode, "seconds", secs);
        cJSON_AddNumberToObject(jmode, "requests", (double)total_req);
        put_num(jmode, "requests_per_s", secs > 0 ? (double)total_req / secs : NAN);
    }
    if (samples) {
        int bad = ax_atomic_commit(samples, samples_tmp, o->log_samples, err);
        samples = NULL;
        if (bad) goto out;
    }

    /* the envelope shared with eval ppl (eval/job.h), then zero-shot's own keys */
    doc = ae_job_envelope(job, "eval zeroshot", NULL);
    if (!doc) { ax_seterr(err, "out of memory building the results"); goto out; }
    cJSON_AddNumberToObject(doc, "max_position_embeddings", m->cfg.max_pos);
    cJSON *jp = cJSON_AddObjectToObject(doc, "protocol");
    cJSON_AddStringToObject(jp, "scoring",
        "lm-evaluation-harness: sum of continuation log-probs; _encode_pair split; acc, acc_norm "
        "(ll / len(choice) in characters); stderr = sample std / sqrt(n); num_fewshot 0");
    cJSON_AddStringToObject(jp, "target_delimiter", " ");
    cJSON_AddBoolToObject(jp, "bos", o->bos != 0);
    cJSON_AddStringToObject(jp, "bos_note", o->bos ?
        "BOS prepended (lm-eval add_bos_token=True; lm-eval >= PR #3347 for LLaMA tokenizers)" :
        "no BOS (lm-eval HFLM add_bos_token=False default up to v0.4.9, as in Atom/QuaRot)");
    if (o->limit > 0) cJSON_AddNumberToObject(jp, "limit", (double)o->limit);
    else cJSON_AddNullToObject(jp, "limit");
    cJSON_AddNumberToObject(jp, "max_length", max_seq);
    cJSON_AddStringToObject(jp, "gemm", ae_gemm_name(o->gemm));
    cJSON_AddBoolToObject(jp, "kv4", o->kv4 != 0);
    cJSON_AddStringToObject(jp, "average", "mean over tasks of acc_norm where defined, else acc (Atom/QuaRot)");
    cJSON_AddStringToObject(jp, "perplexity_stderr", "delta method: ppl * stderr(mean ll) (lm-eval bootstraps)");
    cJSON_AddStringToObject(jp, "batching", "requests in document order (a document's choices adjacent), packed "
                                            "into ae_engine_loglik_packed calls, each from an empty KV cache; "
                                            "within a call cpu reuses the KV cache of a shared prefix; with "
                                            "several ranks each runs a contiguous block of the calls");
    cJSON_AddStringToObject(doc, "data_root", root);
    cJSON_AddItemToObject(doc, "tasks", jt);
    jt = NULL;
    cJSON_AddItemToObject(doc, "modes", jr);
    jr = NULL;
    if (o->log_samples) cJSON_AddStringToObject(doc, "log_samples", o->log_samples);
    cJSON_AddNumberToObject(doc, "seconds", ax_now() - t_start);
    *doc_out = doc;
    doc = NULL;
    rc = 0;
out:
    if (samples) ax_atomic_abort(samples, samples_tmp);
    free(scores);
    ae_engine_free(engine);
    for (int i = 0; i < o->n_tasks && enc; i++) ae_zs_encoded_free(enc[i]);
    for (int i = 0; i < o->n_tasks && sets; i++) ad_zs_set_free(sets[i]);
    ae_job_close(job);
    cJSON_Delete(jt);
    cJSON_Delete(jr);
    cJSON_Delete(doc);
    free(modes); free(tasks); free(sets); free(enc); free(res);
    return rc;
}

/* ---- the table ----------------------------------------------------------------------------------- */
static double jnum(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void cell(char *buf, size_t len, double v, double se, int ppl) {
    if (!isfinite(v)) snprintf(buf, len, "-");
    else if (ppl && v >= 1000) snprintf(buf, len, isfinite(se) ? "%.4g±%.3g" : "%.4g", v, se);
    else if (ppl) snprintf(buf, len, isfinite(se) ? "%.2f±%.2f" : "%.2f", v, se);
    else snprintf(buf, len, isfinite(se) ? "%.4f±%.4f" : "%.4f", v, se);
}

void ae_zs_print_table(FILE *f, const cJSON *doc) {
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(doc, "tasks");
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(doc, "modes");
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(doc, "model");
    const cJSON *proto = cJSON_GetObjectItemCaseSensitive(doc, "protocol");
    const cJSON *t, *r;
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(proto, "limit");
    fprintf(f, "zero-shot (lm-eval scoring), model %s, %s, %s\n", cJSON_IsString(mn) ? mn->valuestring : "?",
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(proto, "bos")) ? "BOS" : "no BOS",
            cJSON_IsNumber(lim) ? "limited (--limit)" : "full sets");
    fprintf(f, "%-15s %-9s %6s", "task", "metric", "n");
    cJSON_ArrayForEach(r, results) {
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(r, "mode");
        fprintf(f, " %18s", cJSON_IsString(mode) ? mode->valuestring : "?");
    }
    fputc('\n', f);
    static const char *const metric[3] = {"acc", "acc_norm", "perplexity"};
    static const char *const shown[3] = {"acc", "acc_norm", "ppl"};
    cJSON_ArrayForEach(t, tasks) {
        const char *tn = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(t, "metrics"), *mm;
        cJSON_ArrayForEach(mm, ms) {
            int k = !strcmp(mm->valuestring, "acc") ? 0 : !strcmp(mm->valuestring, "acc_norm") ? 1 : 2;
            double n = jnum(t, "docs");   /* documents scored: from the first applicable mode */
            cJSON_ArrayForEach(r, results)
                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "applicable"))) {
                    n = jnum(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "tasks"), tn), "n");
                    break;
                }
            fprintf(f, "%-15s %-9s %6.0f", tn, shown[k], n);
            cJSON_ArrayForEach(r, results) {
                char c[64], se_key[64];
                const cJSON *tr = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "tasks"), tn);
                snprintf(se_key, sizeof se_key, "%s_stderr", metric[k]);
                if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "applicable"))) snprintf(c, sizeof c, "n/a");
                else cell(c, sizeof c, jnum(tr, metric[k]), jnum(tr, se_key), k == 2);
                fprintf(f, " %18s", c);
            }
            fputc('\n', f);
        }
    }
    fprintf(f, "%-15s %-9s %6s", "average", "norm|acc", "");
    cJSON_ArrayForEach(r, results) {
        char c[64];
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "applicable"))) snprintf(c, sizeof c, "n/a");
        else cell(c, sizeof c, jnum(r, "average"), NAN, 0);
        fprintf(f, " %18s", c);
    }
    fputc('\n', f);
    fprintf(f, "%-15s %-9s %6s", "time", "s (req/s)", "");
    cJSON_ArrayForEach(r, results) {
        char c[64];
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "applicable"))) snprintf(c, sizeof c, "-");
        else snprintf(c, sizeof c, "%.0f (%.1f)", jnum(r, "seconds"), jnum(r, "requests_per_s"));
        fprintf(f, " %18s", c);
    }
    fputc('\n', f);
}
