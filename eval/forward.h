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
 * cache and scratch for opts->max_seq positions. The model must outlive the runner (the embedding
 * rows are read from it per token by ae_forward); calib may be freed after the call (the channel
 * orders are copied).
 * Weights are read from the model one tensor at a time (ae_model_read_f32/f16, lazy access) and
 * kept by the runner: FP16 mode keeps the checkpoint's values widened to fp32; other modes
 * aq_fakequant them (fp16 rounding first, then the mode's quantizer; perm = calib->perm of the
 * projection's input site for ATOM). gemm EXACT with an integer mode (aq_mode_is_integer) reads the
 * projections as fp16 (ae_model_read_f16) into aq_quantize_w tensors and runs aq_gemm; with
 * FP16/WONLY it is the same as FAKE (no integer GEMM exists for them).
 * Memory: a fp32 copy of every projection (fake / FP16) or the quantized tensors (exact), the norms
 * and lm_head (vocab_size·dim floats) in fp32, KV cache 2·n_layers·max_seq·kv_dim floats, scratch
 * ~max_seq·(3·dim + q_dim + 2·hidden_dim) floats + attention scores.
 * Errors (-1, err): opts NULL, max_seq < 1, odd head_dim, a weight the model cannot read (NaN/inf,
 * named by ae_model_read_*), n_heads not a multiple of n_kv_heads,
 * unknown gemm kind, mode not applicable (ae_mode_check), ATOM without calib or with a calib of
 * another layer count, a weight not representable in fp16 (named), out of memory. */
int ae_runner_build(const ae_model *m, const ae_run_opts *opts, const ae_calib *calib,
                    ae_runner **out, char *err);
void ae_runner_free(ae_runner *r);

/* Run tokens [T] at positions pos .. pos+T-1, appending to the KV cache (which must hold exactly
 * `pos` positions: use ae_runner_truncate to rewind). Writes logits [T - logits_from, vocab] fp32 for
 * positions t >= logits_from (logits may be NULL when logits_from >= T). The whole batch goes
 * through each layer at once (T×K by K×N sgemm); the result does not depend on nthreads.
 * Errors (-1, err; the cache is then left at `pos`): T < 1, pos != cached positions,
 * pos + T > max_seq, logits_from outside [0, T], logits NULL when needed, a token outside
 * [0, vocab) (its index named), an embedding row that cannot be read (NaN/inf: file, tensor, index),
 * a non-finite or fp16-overflowing activation at a quantized site
 * (layer and site named). */
int ae_forward(ae_runner *r, const int *tokens, int T, int pos, int logits_from, float *logits,
               char *err);
/* Forget cached positions >= pos (no effect when pos >= the cached count; pos < 0 acts as 0). */
void ae_runner_truncate(ae_runner *r, int pos);
int  ae_runner_pos(const ae_runner *r);
const ae_model *ae_runner_model(const ae_runner *r);

/* Atom calibration (Atom, Zhao et al. 2024, §4.1 reordering; NUMERICS.md "Atom-style W4Ax"):
 * Σx² per channel of every linear input (before quantization) over tokens [n_windows * seqlen]
 * run as n_windows windows from position 0 (fp32 forward, FP16 mode, on the cpu engine: ae_calibrate_on
 * of eval/engine.h with the cpu device and nthreads), then each site's channels sorted ascending by
 * Σx² (ties: lower channel first). Caller frees with ae_calib_free. ae_calibrate_on and
 * ae_calib_obtain_on (eval/engine.h) run the same on a given device (cuda: fp16 forward).
 * Errors: n_windows or seqlen < 1, tokens outside the vocabulary, out of memory.
 * ae_calib_save writes the binary cache file atomically (format in eval/calib.c: magic, widths,
 * perms, sums, FNV-1a checksum); ae_calib_load reads it for model m and rejects (-1, err naming the
 * file) a wrong magic, another model's shapes, a wrong size, a checksum mismatch or orders that are
 * not the ascending order of the stored sums. */
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

/* out[i] = exp(x[i] - shift) for i < n (out may equal x), in fp32 with the Cephes expf scheme
 * (Moshier, Cephes Math Library, expf.c: n = rne(y·log2 e), r = y − n·C1 − n·C2, degree-5
 * polynomial, scale by 2^n): at most a few ulp from the correctly rounded value; 0 for
 * y < −87.34, +inf for y > 88.72, NaN stays NaN. AVX2 lanes and the scalar tail do the same
 * operations in the same order, so the result does not depend on n's alignment or the build's
 * vector width. Used by the attention softmax and the perplexity log-softmax. */
void ae_exp_shifted(const float *x, float shift, float *out, int n);

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
 * parameters, the dataset sha256 and ae_model_fingerprint>.bin": a second call loads it.
 * Prints "calibration: WikiText-2 validation split (train split not available)" and what it did
 * to `log` (may be NULL). path_out [AX_PATH_LEN] (may be NULL) receives the cache file path.
 * The forward runs on the cpu engine with nthreads; ae_calib_obtain_on (eval/engine.h) takes the
 * device (a cuda calibration has its own key and file name "calib-<name>-cuda-<16 hex>.bin"). */
struct ae_tokenizer;
int ae_calib_obtain(const ae_model *m, const struct ae_tokenizer *tok, int seqlen, int n_windows,
                    const char *cache_dir, int nthreads, FILE *log, ae_calib **out, char *path_out,
                    char *err);

#endif
