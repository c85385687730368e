/* zeroshot.h — zero-shot evaluation scored like EleutherAI lm-evaluation-harness (prefix ae_zs_):
 * tokenization of (context, continuation) pairs, log-likelihood scoring through the engine's packed
 * loglikelihood primitive (eval/engine.h ae_engine_loglik_packed: cpu or cuda), acc / acc_norm /
 * perplexity with standard errors, the per-mode loop and the results JSON (envelope: eval/job.h).
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
#include "dist.h"
#include "engine.h"
#include "forward.h"
#include "tokenizer.h"
#include "../datasets/zeroshot.h" /* the task table (same file name in datasets/) */

/* ---- scoring (pure functions over logits / log-likelihoods) ------------------------------------- */
/* Score one continuation (the reference scoring tests and fake LMs use; the evaluation itself takes
 * the engine's log-probabilities): rows [n, vocab] fp32 logits, row i predicting cont[i]. *ll = Σ_i
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

/* ---- the language model: packed log-likelihoods (an ae_engine, or a fake in tests) --------------- */
typedef struct {
    void *ctx;
    int   vocab;
    int   max_len;       /* longest input (positions) the model takes: lm-eval's max_length        */
    int   batch_tokens;  /* most tokens packed into one call (>= 1; a longer sequence goes alone)   */
    int   batch_seqs;    /* most sequences packed into one call (>= 1)                             */
    /* as ae_engine_loglik_packed (engine.h): n_seqs independent sequences tokens[offsets[i] ..
     * offsets[i+1]), each from position 0; logp[j] = log softmax(logits_j)[targets[j]] and greedy[j] =
     * (argmax == targets[j]) where targets[j] >= 0 */
    int (*loglik)(void *ctx, const int *tokens, const int *offsets, int n_seqs, const int *targets,
                  double *logp, int *greedy, char *err);
    /* called before every packed call (NULL: none): forget any cached state (the engine's KV
     * cache), so that a call's scores depend on its own sequences only, whichever rank runs it */
    void (*reset)(void *ctx);
} ae_zs_lm;

/* Default packing budgets: on cuda the whole pack is one forward (AE_ZS_BATCH_TOKENS tokens); on cpu
 * the engine runs the sequences one after another reusing the KV cache of a shared prefix, across
 * calls too, so the budget only bounds the buffers. */
enum { AE_ZS_BATCH_TOKENS = 16384, AE_ZS_BATCH_SEQS_CPU = 64, AE_ZS_BATCH_SEQS_CUDA = 4096 };

/* An ae_zs_lm over an engine (max_len = the engine's max_seq or less; budgets <= 0 take the
 * defaults above for the engine's device). */
ae_zs_lm ae_zs_lm_from_engine(ae_engine *e, int max_len, int batch_tokens, int batch_seqs);

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

/* Score every request of e with lm and compute the task's metrics. The requests go in document order
 * (the choices of a document, which share their context, are adjacent: the cpu engine reuses that
 * prefix's KV cache), packed into calls of at most lm->batch_seqs sequences and lm->batch_tokens
 * tokens; the packing does not change the scores on cpu. Request (ctx, cont) is the sequence
 * (ctx + cont)[-(max_len+1):][:-1] with its last len(cont) positions scored against cont, as
 * lm-eval's HFLM._loglikelihood_tokens does (inputs longer than lm->max_len are left-truncated);
 * ll = Σ log p(cont_i) summed in order, greedy = every cont_i was the argmax. A document with a
 * continuation longer than max_len cannot be scored (lm-eval asserts there): it is left out and
 * counted in res->skipped, the metrics are over the others (res->n). per_req
 * [e->set->n_requests] (or NULL) receives each request's score, in the order of e->req. Errors: LM
 * errors (prefixed with the task and the documents of the call), every document skipped. */
int ae_zs_eval_encoded(const ae_zs_lm *lm, const ae_zs_encoded *e, ae_zs_result *res,
                       ae_zs_req_score *per_req, ae_zs_progress_fn progress, void *progress_ctx,
                       long progress_base, char *err);
/* The same across the ranks of dist (eval/dist.h; NULL = one rank; every rank calls it with the same
 * arguments and gets the same results). The packed calls — the scored requests in document order,
 * cut greedily into calls of at most batch_seqs sequences and batch_tokens tokens, the same cuts for
 * any number of ranks — are split into contiguous blocks, rank r running calls
 * [n*r/N, n*(r+1)/N); each call starts with lm->reset (the engine's KV cache is emptied, so a
 * request's score depends only on its own call); the per-request (ll, greedy) are gathered to every
 * rank in request order and the metrics computed there as with one rank: bit-identical results for
 * any N. Errors: as ae_zs_eval_encoded, and a failure on another rank. */
int ae_zs_eval_encoded_dist(const ae_zs_lm *lm, const ae_zs_encoded *e, ae_dist *dist, ae_zs_result *res,
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
    ae_device    device;         /* engine backend (0 = cpu)                                       */
    ae_gemm_kind gemm;
    int          kv4;
    int          batch_tokens;   /* packing budget per engine call, 0 = AE_ZS_BATCH_TOKENS          */
    int          batch_seqs;     /* sequences per engine call, 0 = the device default              */
    const char  *out;            /* results path (NULL: none): the calibration cache goes next to it
                                    (eval/job.h); ae_zs_run does not write it                       */
    const char  *calib_dir;      /* explicit calibration cache folder (NULL: the job policy's rule) */
    int          calib_windows;  /* Atom calibration windows, 0 = 128 (eval/job.h)                 */
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
    ae_dist     *dist;           /* ranks (eval/dist.h; NULL = one): requests are shared out by
                                    ae_zs_eval_encoded_dist; every rank returns the same document;
                                    only rank 0 logs and writes log_samples and the calibration cache */
} ae_zs_opts;

/* Load the tasks, then the model and tokenizer through the job policy (eval/job.h: tokenizer check,
 * Atom calibration, engines on o->device), run every mode over every task through
 * ae_engine_loglik_packed, and build the results document (ae_job_envelope("eval zeroshot"): model,
 * model_dir, model_dtype, tokenizer, device, backend, gpu, gemm, kv4, calibration; then
 * max_position_embeddings, protocol, data_root, tasks, per-mode per-task results and the Atom/QuaRot
 * average: acc_norm where defined, else acc). *doc is owned by the caller (cJSON_Delete). The data
 * files are loaded (and checked) before the model. Errors name the file, task or mode. */
int ae_zs_run(const ae_zs_opts *o, cJSON **doc, char *err);

/* Print the results table (tasks × modes, value ± stderr, then the average row) of a document made
 * by ae_zs_run. */
void ae_zs_print_table(FILE *f, const cJSON *doc);

#endif
