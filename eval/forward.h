/* forward.h — LLaMA forward pass on the CPU in fp32, with every q/k/v/o/gate/up/down projection run
 * in a quantization mode (prefix ae_). rmsnorm → qkv → rope (rotate-half) → GQA causal attention →
 * residual → rmsnorm → SwiGLU → residual (llama2.c run.c; HF modeling_llama.py). Linear layers go
 * through OpenBLAS sgemm (fake-quant) or the integer reference aq_gemm (--gemm exact).
 * Owners in pairs: ae_runner_build / ae_runner_free. */
#ifndef APEX4_AE_FORWARD_H
#define APEX4_AE_FORWARD_H

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

#endif
