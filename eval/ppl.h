/* ppl.h — perplexity, KL divergence from FP16 and top-1 agreement per quantization mode (prefix ae_).
 *
 * Protocol (GPTQ datautils.py/llama_eval, Atom and QuaRot eval_ppl): the token stream (WikiText-2
 * test rows joined with "\n\n", tokenized once with BOS at the very start) is cut into
 * numel // seqlen non-overlapping windows [i*seqlen, (i+1)*seqlen); each window is run from
 * position 0 and positions 1..seqlen-1 are scored given the previous ones (seqlen-1 predictions per
 * window, GPTQ's shifted loss); ppl = exp(mean NLL) over all predictions.
 * KL divergence and top-1 agreement as llama.cpp tools/perplexity --kl-divergence: per token
 * KL(P_fp16 || Q_mode) = Σ_v p_v (log p_v − log q_v) with full softmax over the vocabulary, its mean
 * and the standard error of the mean, and "same top p" (% of tokens whose argmax agrees). The FP16
 * distribution comes from a reference runner on the same window in the same run (nothing stored to
 * disk). */
#ifndef APEX4_AE_PPL_H
#define APEX4_AE_PPL_H

#include <stdio.h>
#include <cjson/cJSON.h>
#include "dist.h"
#include "engine.h"
#include "forward.h"

typedef struct {
    const aq_mode *modes;     /* (n_modes) modes to evaluate                                     */
    int  n_modes;
    int  seqlen;              /* window length in tokens, 2 .. model max_position_embeddings      */
    int  max_windows;         /* 0 = all numel // seqlen windows                                  */
    ae_gemm_kind gemm;        /* projections: fake-quant + sgemm, or the integer reference        */
    int  kv4;                 /* 4-bit KV cache in the evaluated modes (never in the reference)   */
    int  nthreads;            /* 0 = all cores                                                    */
    const ae_calib *calib;    /* required when an applicable ATOM mode is listed                  */
    int  progress;            /* 1: progress bar on stderr (windows, tokens/s, ETA)               */
    ae_device device;         /* backend (engine.h). cpu: windows outer, every mode's engine alive,
                                 the reference scored in host memory; cuda: the FP16 reference runs
                                 first and keeps its log-probs once on the device (ae_refstore),
                                 then one mode at a time (device memory does not grow with modes).
                                 The per-mode sums are taken in the same window/position order.   */
} ae_ppl_opts;

typedef struct {
    aq_mode mode;
    int    applicable;        /* 0: mode does not fit the model's shapes (see note), no numbers    */
    char   note[AX_ERR_LEN];  /* why not applicable                                              */
    long   n;                 /* scored predictions                                              */
    double nll, nll_stderr;   /* mean NLL in nats/token and its standard error                   */
    double ppl;               /* exp(nll)                                                         */
    double kld, kld_stderr;   /* mean KL(P_fp16 || Q_mode) in nats/token, standard error          */
    double kld_max;           /* largest per-token KL divergence                                 */
    double top1, top1_stderr; /* fraction of predictions whose argmax equals FP16's, its error    */
    double seconds;           /* forward + scoring time of this mode                             */
    double peak_gib;          /* cuda: peak device memory of this mode's engine (GiB)            */
    double build_seconds;     /* engine build (weights to the device, quantization) within seconds */
    double window_seconds;    /* (seconds - build_seconds) / windows: forward + scoring per window */
} ae_ppl_mode_result;

typedef struct {
    int    seqlen, windows;
    long   stream_tokens;     /* tokens in the stream                                            */
    long   scored;            /* windows * (seqlen - 1)                                          */
    double ref_nll;           /* FP16 reference mean NLL (= the fp16 row when listed without kv4) */
    double ref_seconds;       /* reference forward + preparation time                             */
    double seconds;           /* wall time of ae_eval_ppl                                         */
    char   backend[160];      /* ae_engine_describe of the reference engine ("cpu (2 threads)", GPU name) */
    double ref_store_gib;     /* cuda: size of the reference log-prob store (GiB)                  */
    int    layer_major;       /* cuda: 1 when the engines streamed their layers (layer-major)       */
    long   forward_tokens;    /* tokens through all forward passes (reference + modes)            */
    int    n_modes;
    ae_ppl_mode_result *modes;/* (n_modes), in the order given                                   */
} ae_ppl_result;

/* Evaluate tokens [n_tokens] (ids < vocab_size) for every mode in o. Modes that do not fit the
 * model (ae_mode_check) are reported with applicable = 0 and do not stop the run; every other
 * problem is an error (-1, err): fewer than one window, seqlen outside [2, max_pos], a missing
 * calibration, non-finite logits (the lm_head output: the message names the mode, the window
 * "w of nw" (0-based), the position, the token id and NaN/inf). res is owned by the caller
 * (ae_ppl_result_free). */
int ae_eval_ppl(const ae_model *m, const int *tokens, size_t n_tokens, const ae_ppl_opts *o,
                ae_ppl_result *res, char *err);
void ae_ppl_result_free(ae_ppl_result *res);

/* Ranks and checkpoints of a run (ae_eval_ppl_ctl; NULL = one rank, no checkpoints).
 * Ranks (eval/dist.h): windows are split into contiguous blocks, rank r of N scoring windows
 * [nw*r/N, nw*(r+1)/N) (ae_dist_block); every window's sums start from zero and the totals add the
 * window sums in window order on every rank, so N = 1 and N = 2 give bit-identical numbers. The
 * device schedule's reference store then holds only the rank's windows.
 * Checkpoints: the per-window sums of every finished (window, mode), written atomically by rank 0 to
 * `checkpoint` whenever checkpoint_every seconds have passed since the last one (<= 0: after every
 * window step), as JSON: {"format": "apex4 eval ppl checkpoint v1", "args_hash" (FNV-1a 64 of args,
 * 16 hex digits), "args" (the argument key: args_key + "|seqlen=..|windows=..|tokens=<FNV-1a of the
 * evaluated token ids>|gemm=..|kv4=..|device=..|modes=.."), "windows", "modes", "per_window",
 * "done_windows" (windows with every mode finished), "state" (per window null or the sums as exact
 * "%a" hex floats)}. With resume, the state of an existing checkpoint is loaded first and finished
 * work is skipped; a checkpoint with another argument key is refused (-1, err naming the first field
 * that differs); a missing one starts from the first window (a notice). The resumed run's numbers
 * equal an uninterrupted run's (per-window sums, window-order totals). The cuda schedule keeps the
 * reference's log-probs in device memory only: on resume the reference is run again for every window
 * that has a mode left to score. Timing fields count the work of this run only. */
typedef struct {
    ae_dist    *dist;              /* NULL: one rank                                                */
    const char *checkpoint;        /* partial results file, NULL: no checkpoints                    */
    double      checkpoint_every;  /* seconds between checkpoints; <= 0: after every window step     */
    int         resume;            /* 1: continue from `checkpoint` when it exists                   */
    const char *args_key;          /* "key=value|..." of what the numbers depend on besides the
                                      options and tokens (model, tokenizer, dataset, calibration)    */
    FILE       *log;               /* notices and checkpoint warnings (NULL: none)                   */
    int         layer_major;       /* cuda: 0 auto, 1 always, -1 never (ae_engine_opts.layer_major)  */
    size_t      gpu_mem_limit;     /* cuda: bytes an engine may plan for (0 = 90% of the device)     */
    int         gpu;               /* cuda: this rank's device index (ae_dist_gpu: local rank modulo
                                      the device count; 0 for one rank)                              */
} ae_ppl_ctl;

/* ae_eval_ppl with ranks and checkpoints. Every rank calls it with the same arguments; every rank
 * returns the full result. Errors: those of ae_eval_ppl, "--resume needs a checkpoint file", a
 * checkpoint of other arguments or a corrupt one (named), a failure on another rank ("rank R of N
 * failed ..."). */
int ae_eval_ppl_ctl(const ae_model *m, const int *tokens, size_t n_tokens, const ae_ppl_opts *o,
                    const ae_ppl_ctl *ctl, ae_ppl_result *res, char *err);

/* Scoring primitives (exposed for tests).
 * ae_logsumexp: log Σ exp(l_v) over l [V], max-shifted, exponentials by ae_exp_shifted, sum in double.
 * ae_score_row: one prediction. P is given by ref_logits [V], ref_lse = ae_logsumexp(ref_logits),
 * ref_p [V] (p_v = exp((float)(ref_l_v − ref_lse))) and ref_psum = Σ p_v; Q by logits [V]. Writes
 * nll = lse(Q) − logits[target]; kld = KL(P||Q) = Σ p_v (ref_l_v − l_v) + (lse(Q) − ref_lse)·Σ p_v
 * (= Σ p_v (log p_v − log q_v); products in fp32, sums in double: identical logits give exactly 0);
 * *same = (argmax Q == ref_argmax), argmax ties to the lowest id. */
double ae_logsumexp(const float *l, int V);
void ae_score_row(const float *ref_logits, double ref_lse, double ref_psum, const float *ref_p,
                  int ref_argmax, const float *logits, int V, int target, double *nll, double *kld,
                  int *same);

/* The non-finite-logits check ae_eval_ppl runs on every window of every mode (exposed for tests):
 * rows 0..T-2 of logits (T, V) (the lm_head output of window w of nw) must be finite; else -1 with
 * err "mode <mode>, window <w> of <nw> (0-based), position <t>: non-finite logits (lm_head output):
 * the logit of token id <v> is NaN|inf (model <model>)" for the first such value in row order. */
int ae_ppl_check_logits(const float *logits, int T, int V, const char *mode, long w, long nw, const char *model,
                        char *err);

/* The evaluation as `apex4 eval ppl` runs it. */
typedef struct {
    const char *model_dir;    /* checkpoint folder                                               */
    const char *tokenizer;    /* tokenizer.json path, NULL = <model_dir>/tokenizer.json           */
    const char *dataset;      /* "wikitext2"                                                      */
    const char *modes;        /* comma-separated mode names, "standard" = aq_standard_modes       */
    const char *out;          /* results JSON path, NULL = none                                   */
    int seqlen;               /* 0 = 2048; capped by max_position_embeddings with a notice        */
    int max_windows;          /* 0 = all                                                          */
    int calib_windows;        /* Atom calibration windows (0 = 128)                              */
    int kv4, nthreads, progress;
    ae_gemm_kind gemm;
    ae_device device;         /* cpu (default) or cuda                                           */
    ae_dist *dist;            /* ranks (eval/dist.h), NULL = one. Only rank 0 prints and writes  */
    int resume;               /* --resume: continue from <out>.partial (needs out)                */
    long checkpoint_every;    /* seconds between checkpoints to <out>.partial: 0 = the default
                                 AE_PPL_CHECKPOINT_EVERY, < 0 = after every window               */
    int layer_major;          /* --layer-major (1) / --no-layer-major (-1); 0 = auto              */
    size_t gpu_mem_limit;     /* --gpu-mem-limit SIZE in bytes (0 = 90% of the device)           */
} ae_ppl_job;

enum { AE_PPL_CHECKPOINT_EVERY = 300 };   /* --checkpoint-every default, seconds */

/* Load the model, tokenizer and dataset, calibrate (cached next to `out`, or in "." without one)
 * when an Atom mode is listed, evaluate, print notices to `log` and the table to `table`, and
 * write the results JSON atomically. With out, partial results are checkpointed to "<out>.partial"
 * (ae_ppl_ctl; args key: model folder, model dtype, tokenizer path, dataset sha256, calibration
 * cache file), which is removed once out is written; resume continues from it. With dist, every
 * rank calls it; only rank 0 prints, writes out and checkpoints. Checked before any work: out (ax_check_out_path: "--out: empty
 * path", a missing or unwritable folder), an empty tokenizer path. The tokenizer must fit the
 * model (ae_model_check_tokenizer). Errors: -1 with err (bad mode list, missing files, ...). */
int ae_ppl_run_job(const ae_ppl_job *job, FILE *table, FILE *log, char *err);

/* Table (one row per mode: ppl, Δppl vs FP16, NLL, KLD ± se, top-1 ± se, seconds). */
void ae_ppl_print_table(FILE *f, const ae_ppl_result *res);

#endif
