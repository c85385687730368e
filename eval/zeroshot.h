/* zeroshot.h — zero-shot evaluation scored like EleutherAI lm-evaluation-harness (prefix ae_zs_):
 * tokenization of (context, continuation) pairs, log-likelihood scoring with shared contexts,
 * acc / acc_norm / perplexity with standard errors, the per-mode runner loop and the results JSON.
 * Tasks and request strings come from datasets/zeroshot.h.
 *
 * Sources (github.com/EleutherAI/lm-evaluation-harness):
 *  - lm_eval/api/model.py TemplateLM._encode_pair: trailing whitespace of the context (what Python's
 *    str.rstrip() strips: Unicode whitespace, datasets/ustr.h) moves to the continuation; whole = enc(context + continuation), ctx = enc(context), continuation tokens =
 *    whole[len(ctx):]; TemplateLM.loglikelihood: an empty context becomes [prefix_token_id].
 *  - lm_eval/models/huggingface.py HFLM.tok_encode: for causal LMs add_special_tokens =
 *    add_bos_token, which defaults to False up to v0.4.9 (the versions Atom and QuaRot used): no BOS.
 *    PR #3347 (Oct 2025) delegates to the tokenizer, which for LLaMA adds BOS: use opts.bos = 1.
 *    HFLM._loglikelihood_tokens: input = (ctx + cont)[-(max_length+1):][:-1], the logits of the last
 *    len(cont) positions are log-softmaxed; ll = Σ log p(cont_i), is_greedy = all(argmax == cont_i).
 *  - lm_eval/api/task.py process_results (acc, acc_norm by len(choice) in characters, np.argmax: the
 *    first maximum wins ties); lm_eval/api/metrics.py mean_stderr = sample std (ddof 1) / sqrt(n),
 *    perplexity = exp(-mean(ll)).
 * Owners in pairs: ae_zs_encode_set / ae_zs_encoded_free. Errors: non-zero return, message in err
 * (AX_ERR_LEN bytes) naming the task, document or file. */
#ifndef APEX4_AE_ZEROSHOT_H
#define APEX4_AE_ZEROSHOT_H

#include <stdio.h>
#include <cjson/cJSON.h>

#include "aq.h"
#include "forward.h"
#include "tokenizer.h"
#include "../datasets/zeroshot.h" /* the task table (same file name in datasets/) */

/* ---- scoring (pure functions over logits / log-likelihoods) ------------------------------------- */
/* Score one continuation: rows [n, vocab] fp32 logits, row i predicting cont[i]. *ll = Σ_i
 * log_softmax(row_i)[cont_i] (double accumulation), *greedy = 1 iff every cont_i is the row's argmax
 * (first maximum on ties, as torch.argmax). Errors: token outside [0, vocab), non-finite logit. */
int ae_zs_score_rows(const float *rows, int n, int vocab, const int *cont, double *ll, int *greedy,
                     char *err);
/* Multiple-choice decision from lls [n] and choice lengths len [n] (characters): *pred =
 * argmax(lls), *pred_norm = argmax(lls / len) (first maximum on ties, as np.argmax). */
void ae_zs_decide(const double *lls, const double *len, int n, int *pred, int *pred_norm);
/* Sample mean and lm-eval's mean_stderr of x [n]: sqrt(Σ(x-mean)²/(n-1)) / sqrt(n); NaN for n < 2. */
void ae_zs_mean_stderr(const double *x, long n, double *mean, double *stderr_);

/* ---- tokenized requests ----------------------------------------------------------------------- */
typedef struct {
    int *ctx;  int n_ctx;    /* context ids (may be [prefix token] for an empty context)           */
    int *cont; int n_cont;   /* continuation ids (>= 1)                                           */
} ae_zs_ids;

typedef struct {
    const ad_zs_set *set;
    ae_zs_ids *req;          /* (set->n_requests) in document order, choices in order             */
    int       *first;        /* (set->n_docs + 1) index of each document's first request          */
    long       n_tokens;     /* Σ (n_ctx + n_cont) over requests                                   */
} ae_zs_encoded;

/* _encode_pair of lm-eval for one (context, continuation): see the sources above. add_bos prepends
 * BOS to both encodings (add_bos_token=True). An empty context becomes [BOS] (prefix_token_id),
 * or [EOS] when the tokenizer has no BOS. Errors: the continuation encodes to no tokens. */
int ae_zs_encode_pair(const ae_tokenizer *tok, const char *context, const char *continuation,
                      int add_bos, ae_zs_ids *out, char *err);
int ae_zs_encode_set(const ae_tokenizer *tok, const ad_zs_set *set, int add_bos,
                     ae_zs_encoded **out, char *err);
void ae_zs_encoded_free(ae_zs_encoded *e);

/* ---- the language model as two callbacks (an ae_runner, or a fake in tests) -------------------- */
typedef struct {
    void *ctx;
    int   vocab;
    int   max_len;       /* longest input (positions) the model takes: lm-eval's max_length        */
    /* as ae_forward: tokens [T] at positions pos.., logits [T - logits_from, vocab] */
    int (*forward)(void *ctx, const int *tokens, int T, int pos, int logits_from, float *logits,
                   char *err);
    void (*truncate)(void *ctx, int pos);   /* forget positions >= pos                             */
} ae_zs_lm;

/* An ae_zs_lm over an ae_runner (max_len = the runner's max_seq). */
ae_zs_lm ae_zs_lm_from_runner(ae_runner *r, int max_seq);

/* Per-task results of one mode. NaN where a metric is not defined. */
typedef struct {
    double acc, acc_stderr;
    double acc_norm, acc_norm_stderr;
    double ppl, ppl_stderr;    /* perplexity and its delta-method standard error ppl · se(mean ll)  */
    double mean_ll;            /* mean log-likelihood of the gold continuation                     */
    long   n, requests, tokens;
    long   skipped;            /* documents left out: a continuation longer than max_len          */
    double seconds;
} ae_zs_result;

/* Progress callback: done requests so far (for the bar). */
typedef void (*ae_zs_progress_fn)(void *ctx, long done);

/* One request's score (--log-samples): ll = Σ log p(continuation token) in nats, greedy = every
 * continuation token was the argmax; scored = 0 for the requests of a document left out (then ll is
 * NaN). */
typedef struct {
    double ll;
    int    greedy;
    int    scored;
} ae_zs_req_score;

/* Score every request of e with lm, reusing cached context (the KV cache keeps the longest common
 * token prefix with the previous request; a context equal to the previous one is not recomputed, its
 * last-position logits are kept), then compute the task's metrics. Inputs longer than lm->max_len
 * are left-truncated as lm-eval does. A document with a continuation longer than max_len cannot be
 * scored (lm-eval asserts there): it is left out and counted in res->skipped, the metrics are over
 * the others (res->n). per_req [e->set->n_requests] (or NULL) receives each request's score, in
 * the order of e->req. Errors: LM errors, every document skipped. */
int ae_zs_eval_encoded(const ae_zs_lm *lm, const ae_zs_encoded *e, ae_zs_result *res,
                       ae_zs_req_score *per_req, ae_zs_progress_fn progress, void *progress_ctx,
                       long progress_base, char *err);

/* ---- the whole evaluation (what `apex4 eval zeroshot` runs) ------------------------------------ */
typedef struct {
    const char  *model_dir;      /* HF checkpoint folder                                           */
    const char  *tokenizer;      /* tokenizer.json path, or NULL for <model_dir>/tokenizer.json   */
    const char  *data_root;      /* folder holding data/, or NULL for ax_data_root()               */
    const char **tasks;  int n_tasks;
    const char **modes;  int n_modes;
    long         limit;          /* 0 = full sets                                                  */
    int          bos;            /* 1: prepend BOS (lm-eval add_bos_token=True / >= PR #3347)       */
    int          nthreads;       /* 0 = all cores                                                  */
    ae_gemm_kind gemm;
    int          kv4;
    const char  *calib_dir;      /* where the Atom calibration cache lives (NULL: ".")             */
    FILE        *log;            /* notices (calibration, hellaswag variant); NULL = silent         */
    /* --log-samples (lm-eval --log_samples): JSON-lines file written atomically at the end, one line
     * per request of every applicable mode, in mode, task, document, choice order:
     *   {"mode": str, "task": str, "doc": int (0-based document index after --limit), "choice": int,
     *    "context": str, "continuation": str (the request strings lm-eval passes to loglikelihood),
     *    "ctx_ids": [int], "cont_ids": [int] (_encode_pair's split, before any left truncation to
     *    max_length), "ll": number (Σ log-probabilities of cont_ids, nats, the value acc / acc_norm
     *    were decided on) or null, "greedy": bool or null, "skipped": bool (the document was left
     *    out: a continuation longer than max_length; ll and greedy are then null),
     *    "choice_len": int (characters, i.e. code points, of the choice string, acc_norm's divisor),
     *    "gold": int (the gold choice of the document)}
     * NULL: none. The path is checked (ax_check_out_path) before any work. */
    const char  *log_samples;
} ae_zs_opts;

/* Load the model, tokenizer and tasks, run every mode over every task, and build the results
 * document (ax_envelope_new("eval zeroshot") + model, data, protocol, per-mode per-task results and
 * the Atom/QuaRot average: acc_norm where defined, else acc). *doc is owned by the caller
 * (cJSON_Delete). The data files are loaded (and checked) before the model. Errors name the file,
 * task or mode. */
int ae_zs_run(const ae_zs_opts *o, cJSON **doc, char *err);

/* Print the results table (tasks × modes, value ± stderr, then the average row) of a document made
 * by ae_zs_run. */
void ae_zs_print_table(FILE *f, const cJSON *doc);

#endif
