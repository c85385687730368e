/* forward.h — LLaMA forward pass on the CPU in fp32, with every q/k/v/o/gate/up/down projection run
 * in a quantization mode (prefix ae_). rmsnorm → qkv → rope (rotate-half) → GQA causal attention →
 * residual → rmsnorm → SwiGLU → residual (llama2.c run.c; HF modeling_llama.py). Linear layers go
 * through OpenBLAS sgemm (fake-quant) or the integer reference aq_gemm (--gemm exact).
 * Owners in pairs: ae_runner_build / ae_runner_free. */
#ifndef APEX4_AE_FORWARD_H
#define APEX4_AE_FORWARD_H

#include <stdio.h>
#include "aq.h"
#include "model.h"

/* Atom calibration: per linear input (4 per layer: attn_in feeds q/k/v, attn_out feeds o, mlp_in
 * feeds gate/up, mlp_out feeds down), the channel order sorted ascending by Σx² (the last `outliers`
 * are the outliers). perm[layer*4 + site] is an int32 array of that input's width. */
enum { AE_SITE_ATTN_IN = 0, AE_SITE_ATTN_OUT = 1, AE_SITE_MLP_IN = 2, AE_SITE_MLP_OUT = 3, AE_NSITES = 4 };
typedef struct {
    int       n_layers;
    int32_t **perm;      /* (n_layers*4) arrays of width dim / n_heads*head_dim / dim / hidden_dim */
    double  **sumsq;     /* same shape: Σx² per channel over the calibration tokens               */
    long      tokens;    /* calibration tokens seen                                               */
    int       width[AE_NSITES]; /* channels per site: dim, n_heads*head_dim, dim, hidden_dim        */
} ae_calib;

typedef enum { AE_GEMM_FAKE = 0, AE_GEMM_EXACT = 1 } ae_gemm_kind;

typedef struct {
    aq_mode      mode;
    ae_gemm_kind gemm;      /* fake-quant + sgemm (default) or the integer reference           */
    int          kv4;       /* 4-bit KV cache (NUMERICS.md "KV-cache 4-bit")                    */
    int          nthreads;  /* 0 = all cores                                                    */
    int          max_seq;   /* KV cache capacity in positions                                   */
} ae_run_opts;

typedef struct ae_runner ae_runner;

/* Quantize the model's weights once for opts->mode (calib required for ATOM) and allocate the KV
 * cache and scratch for opts->max_seq positions. The model must outlive the runner. */
int ae_runner_build(const ae_model *m, const ae_run_opts *opts, const ae_calib *calib,
                    ae_runner **out, char *err);
void ae_runner_free(ae_runner *r);

/* Run tokens [T] at positions pos .. pos+T-1, appending to the KV cache (which must hold exactly
 * `pos` positions: use ae_runner_truncate to rewind). Writes logits [T - logits_from, vocab] fp32 for
 * positions t >= logits_from (logits may be NULL when logits_from >= T). */
int ae_forward(ae_runner *r, const int *tokens, int T, int pos, int logits_from, float *logits,
               char *err);
/* Forget cached positions >= pos. */
void ae_runner_truncate(ae_runner *r, int pos);
int  ae_runner_pos(const ae_runner *r);
const ae_model *ae_runner_model(const ae_runner *r);

/* Atom calibration: Σx² per channel of every linear input over the windows [n_windows, seqlen] of
 * tokens (fp32 forward, no quantization), then the ascending order. Caller frees with
 * ae_calib_free. Cached by the evaluator (ae_calib_save / ae_calib_load, a small binary file). */
int ae_calibrate(const ae_model *m, const int *tokens, int n_windows, int seqlen, int nthreads,
                 ae_calib **out, char *err);
void ae_calib_free(ae_calib *c);
int ae_calib_save(const ae_calib *c, const char *path, char *err);
int ae_calib_load(const ae_model *m, const char *path, ae_calib **out, char *err);

/* ---- additions (engineer "forward") ------------------------------------------------------------ */

/* 0 if mode m applies to model `m`'s layer shapes, else -1 with err saying why (ATOM needs every
 * linear input width K > outliers, since K - o >= 1 channels must remain 4-bit). ae_runner_build
 * checks this first; the evaluator uses it to mark a mode "not applicable" instead of failing. */
int ae_mode_check(const ae_model *m, const aq_mode *mode, char *err);

/* The run options the runner was built with (nthreads resolved: >= 1). */
const ae_run_opts *ae_runner_opts(const ae_runner *r);

/* Greedy decoding: feed prompt [n_prompt] (n_prompt >= 1, e.g. just BOS) from position 0 (the
 * runner is truncated to 0 first), then append argmax tokens until n_new were produced, a token in
 * stop [n_stop] was produced (it is not appended) or the runner's max_seq is reached.
 * out [n_new] receives the new tokens, *n_out their count. on_token (may be NULL) is called after
 * each new token with the whole sequence so far (prompt + new) for streaming. Ties in argmax go to
 * the lowest id (llama2.c sample_argmax). Source: llama2.c run.c generate(). */
typedef void (*ae_token_cb)(void *ctx, const int *seq, int n);
int ae_generate(ae_runner *r, const int *prompt, int n_prompt, int n_new, const int *stop,
                int n_stop, int *out, int *n_out, ae_token_cb on_token, void *ctx, char *err);

/* Calibration hook: while c is set (NULL clears), every ae_forward adds Σx² per channel of each
 * linear input (before quantization) to c->sumsq[layer*4 + site]. Used by ae_calibrate. */
void ae_runner_collect(ae_runner *r, ae_calib *c);

/* Run fn(ctx, start, end, tid) over [0, n) split into up to nthreads contiguous ranges of at least
 * min_chunk items (nthreads <= 0: all online cores), on pthreads plus the calling thread. Results
 * must not depend on the split (each item is computed by exactly one thread). */
typedef void (*ae_range_fn)(void *ctx, long start, long end, int tid);
void ae_parallel_for(int nthreads, long n, long min_chunk, ae_range_fn fn, void *ctx);
/* Online cores (>= 1). */
int ae_ncores(void);

/* Calibration as the evaluator runs it (eval/calib.c): tokens from WikiText-2 *validation*
 * (datasets/wikitext.h; the train split is not available here), tokenized with BOS at the start,
 * n_windows windows [i*seqlen, (i+1)*seqlen) (fewer if the split is shorter; a notice says so).
 * The result is cached in cache_dir as "calib-<model dir name>-<16 hex of an FNV-1a hash of the
 * parameters, the dataset sha256 and a fingerprint of the weights>.bin": a second call loads it.
 * Prints "calibration: WikiText-2 validation split (train split not available)" and what it did
 * to `log` (may be NULL). path_out [AX_PATH_LEN] (may be NULL) receives the cache file path. */
struct ae_tokenizer;
int ae_calib_obtain(const ae_model *m, const struct ae_tokenizer *tok, int seqlen, int n_windows,
                    const char *cache_dir, int nthreads, FILE *log, ae_calib **out, char *path_out,
                    char *err);

#endif
