/* engine.h — one language-model interface for every evaluator (prefix ae_engine_): perplexity,
 * zero-shot, generation and calibration call this, never a backend directly (llama.cpp's perplexity
 * tool sees only llama_decode / llama_get_logits; ../shared/design/LAYOUT.md "eval/engine").
 *
 * Backends:
 *   cpu   the fp32 forward of eval/forward.c (ae_runner): projections fake-quant + OpenBLAS sgemm, or
 *         with --gemm exact the integer reference aq_gemm (quant/).
 *   cuda  activations fp16 on the device between layers as Hugging Face fp16 inference
 *         (modeling_llama.py); embeddings, RMSNorm (fp32 inside), rotate-half RoPE, GQA causal
 *         attention, SwiGLU and residuals by kernels/ak_ops.h; lm_head by cuBLAS with fp32 logits.
 *         Projections by the mode row: fp16 by cuBLAS; integer modes with --gemm exact by apex4's
 *         activation quantizer and GEMM kernels (kernels/ak.h, bit-exact with the CPU reference)
 *         on device-resident weights quantized on the device (byte-identical to aq_quantize_w);
 *         --gemm fake: activations quantized and dequantized by a kernel, weights dequantized once,
 *         cuBLAS (the simulation Atom and QuaRot evaluate with); w4a16: weights dequantized to fp16.
 * Owners in pairs: ae_engine_new / ae_engine_free. */
#ifndef APEX4_AE_ENGINE_H
#define APEX4_AE_ENGINE_H

#include <stddef.h>
#include "forward.h"

typedef enum { AE_DEV_CPU = 0, AE_DEV_CUDA = 1 } ae_device;

/* "cpu", "cuda" or "auto" (cuda when ak_device_count() > 0, else cpu) -> *out. "cuda" without a
 * device (or in a build without CUDA) is an error naming `opt` and the reason; anything else is an
 * error listing the valid values. */
int ae_device_parse(const char *s, const char *opt, ae_device *out, char *err);
const char *ae_device_name(ae_device d);   /* "cpu" / "cuda" */

/* "exact" / "fake" -> *out; error naming `opt` otherwise. */
int ae_gemm_parse(const char *s, const char *opt, ae_gemm_kind *out, char *err);
const char *ae_gemm_name(ae_gemm_kind g);  /* "fake" / "exact" */

typedef struct {
    ae_device    device;
    aq_mode      mode;
    ae_gemm_kind gemm;      /* fake-quant or the integer path (reference on cpu, kernels on cuda)   */
    int          kv4;       /* 4-bit KV cache (NUMERICS.md "KV-cache 4-bit")                       */
    int          nthreads;  /* cpu backend: 0 = all cores                                          */
    int          max_seq;   /* KV cache capacity in positions (>= 1)                               */
    int          gpu;       /* cuda: device index (MPI: the rank's local rank mod the device count) */
    int          layer_major; /* cuda: 0 auto (when the model does not fit gpu_mem_limit), 1 always,
                               * -1 never. Layer-major = weights streamed one layer at a time
                               * (ae_engine_score_windows runs every window through a layer before
                               * the next is loaded); same numbers bit for bit as resident.          */
    size_t       gpu_mem_limit; /* cuda: bytes the engine may plan for (0 = 90% of the device)      */
} ae_engine_opts;

typedef struct ae_engine ae_engine;

/* Build an engine for model m (which must outlive it) in mode o->mode; calib is required for ATOM
 * modes (copied; may be freed after the call). Errors (-1, err): those of ae_runner_build (cpu), no
 * CUDA device / build without CUDA, a mode or shape the kernels do not take (ak_supports, named),
 * out of device memory (the tensor named), a weight not representable in fp16. */
int  ae_engine_new(const ae_model *m, const ae_engine_opts *o, const ae_calib *calib, ae_engine **out,
                   char *err);
void ae_engine_free(ae_engine *e);

/* As ae_forward (forward.h): run tokens [T] at positions pos .. pos+T-1 appending to the KV cache
 * (which must hold exactly `pos` positions), writing logits [T - logits_from, vocab] fp32 to host
 * memory. Same errors as ae_forward, plus CUDA failures (the step named). */
int  ae_engine_forward(ae_engine *e, const int *tokens, int T, int pos, int logits_from, float *logits,
                       char *err);
void ae_engine_truncate(ae_engine *e, int pos);
int  ae_engine_pos(const ae_engine *e);
const ae_engine_opts *ae_engine_opts_of(const ae_engine *e);
const ae_model *ae_engine_model(const ae_engine *e);
/* The ae_runner behind a cpu engine (NULL for cuda): calibration hooks and greedy generation. */
ae_runner *ae_engine_runner(ae_engine *e);
/* "cpu (N threads)" or the GPU's name ("NVIDIA H200"). */
void ae_engine_describe(const ae_engine *e, char *buf, size_t len);
/* Peak device memory in bytes allocated by this engine (0 on cpu). */
size_t ae_engine_peak_bytes(const ae_engine *e);

/* ---- perplexity scoring on the backend (logits never leave the device on cuda) ----------------- */

/* Reference store: the FP16 model's log-probabilities log p_v for every scored position of n_windows
 * windows of seqlen tokens, fp32 [n_windows, seqlen - 1, vocab], kept once in the backend's memory
 * (device memory on cuda) so that every mode runs alone afterwards and memory does not grow with the
 * number of modes (llama.cpp perplexity --kl-divergence-base). Errors: out of memory (bytes named). */
typedef struct ae_refstore ae_refstore;
int  ae_refstore_new(ae_engine *e, int n_windows, int seqlen, ae_refstore **out, char *err);
void ae_refstore_free(ae_refstore *rs);

/* Forward window tokens [T] from position 0 (the cache is truncated first) and score positions
 * t = 0 .. T-2 predicting tokens[t+1]: nll[t] = logsumexp(l) - l[target] (nats). With store != 0 the
 * window's log-probs are written to slot `window` of rs (the reference run) and kld/same are not
 * written; with store == 0 and rs != NULL, kld[t] = KL(P_ref || Q) = Σ_v p_v (log p_v - log q_v) and
 * same[t] = (argmax Q == argmax P) (ties to the lowest id) against slot `window`. rs == NULL: only nll.
 * Arrays nll, kld [T-1] double, same [T-1] int (kld/same may be NULL when not written).
 * Afterwards the KV cache holds nothing (ae_engine_pos 0): the cuda backend's attention reads the
 * window's keys and values straight from the q|k|v output instead of filling the cache.
 * Errors: T outside [2, max_seq], window outside the store, non-finite logits (window-local position
 * named), forward errors. */
int ae_engine_score_window(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window,
                           int store, double *nll, double *kld, int *same, char *err);

/* n windows window0 .. window0+n-1 at once: tokens [n, T] (window w at tokens + w·T), results
 * nll, kld [n, T-1] double and same [n, T-1] int as n calls of ae_engine_score_window. A layer-major
 * engine (cuda with layers streamed: ae_engine_layer_major) runs every window through a layer before
 * loading the next, keeping the n hidden states [n, T, dim] fp16 on the device, or, when they do not
 * fit the memory limit next to one layer, in host memory, passed through a device buffer of as many
 * windows as fit, chunk by chunk (APEX4_HIDDEN_WINDOWS=k forces chunks of k: testing); otherwise
 * window by window. The numbers are the same bit for bit either way. Errors: as
 * ae_engine_score_window (the window named), out of device memory for the hidden states or out of
 * host memory for their spilled copy (bytes named), APEX4_HIDDEN_WINDOWS not an integer in
 * [1, 2^30]. */
int ae_engine_score_windows(ae_engine *e, const int *tokens, int n, int T, ae_refstore *rs, long window0,
                            int store, double *nll, double *kld, int *same, char *err);
/* 1 when the engine streams its layers (layer-major), else 0. */
int ae_engine_layer_major(const ae_engine *e);

/* ---- log-likelihood of packed sequences (zero-shot, lm-evaluation-harness loglikelihood) -------- */

/* n_seqs independent sequences packed back to back: sequence i is tokens[offsets[i] .. offsets[i+1])
 * (offsets [n_seqs + 1], offsets[0] = 0, each length in [1, max_seq]), each run from position 0 with
 * its own causal attention. For every packed token j with targets[j] >= 0 (targets [offsets[n_seqs]]
 * int32; -1 = not scored; the last token of a sequence may be scored only against an id the caller
 * supplies), writes logp[j] = log softmax(logits_j)[targets[j]] (nats, double) and greedy[j] =
 * (argmax logits_j == targets[j], ties to the lowest id); other entries are left untouched.
 * The cpu backend runs the sequences one after another, reusing the KV cache for the prefix a
 * sequence shares with the one before it (as lm-evaluation-harness requests of one document share
 * their context; the logits then differ from a one-batch forward only by sgemm rounding); the cuda
 * backend packs as many whole sequences as fit its max_seq positions into one forward (positions
 * restart at 0 per sequence, block-diagonal causal attention), computes logits only for the scored
 * rows and keeps them on the device.
 * Errors: bad offsets, a sequence longer than max_seq, a token or target outside the vocabulary
 * (index named), non-finite logits (sequence and position named), forward errors. */
int ae_engine_loglik_packed(ae_engine *e, const int *tokens, const int *offsets, int n_seqs,
                            const int *targets, double *logp, int *greedy, char *err);

/* In-situ probe of one projection (tests; LAYOUT "in situ check"): run projection `proj` (0..6 =
 * q, k, v, o, gate, up, down) of layer `layer` exactly as the forward pass does — the site's
 * activation quantization (or fake-quant), then the GEMM on the engine's resident weights — on
 * x [T, K] fp16 bits (host; K = the projection's input width), writing y [T, N] fp16 bits (host).
 * With --gemm exact on cuda this must equal the CPU exact path byte for byte (aq_quantize_x of x,
 * aq_gemm with k_splits = 1 on aq_quantize_w of the fp16 weights). cpu backend: not available (-1).
 * Errors: layer/proj out of range, T outside [1, max_seq], backend errors. */
int ae_engine_probe_linear(ae_engine *e, int layer, int proj, const uint16_t *x, int T, uint16_t *y, char *err);

/* ---- Atom calibration on the engine's device (NUMERICS.md "Atom-style W4Ax") --------------------- */

/* Run n_windows windows tokens [n_windows, seqlen] (window w at tokens + w·seqlen, each from position
 * 0, no logits) through the FP16 forward and add, for every layer l and site s (forward.h
 * AE_SITE_*: the inputs of q|k|v, o, gate|up, down, before any quantization), Σ_t x[t, k]² of each
 * channel k to c->sumsq[l*4 + s][k] (double); c->tokens += n_windows·seqlen. c must have the model's
 * layer count and site widths (dim, n_heads·head_dim, dim, hidden_dim; as ae_calibrate allocates).
 *   cpu   the runner's per-layer hook (ae_runner_collect): fp32 activations, (double)x·x added in
 *         token order — exactly what ae_calibrate always did.
 *   cuda  fp16 activations (the engine's forward); each site's input [T, width] reduced on the device
 *         by ak_ops_colsumsq (kernels/ak_calib.h: exact squares, double running sums, rows in order,
 *         windows in order) into a device buffer [layers][4][width] float64 loaded from c->sumsq first
 *         and downloaded at the end. A layer-major engine (ae_engine_layer_major) runs every window
 *         through layer l before l + 1 is loaded, keeping the hidden states [n_windows, seqlen, dim]
 *         fp16 on the device or spilled to host (as ae_engine_score_windows); the sums are the same bit for bit as the
 *         resident engine's (same activations, same order per accumulator).
 * The engine must run the FP16 mode without kv4 (the channel order is a property of the FP16 model).
 * Afterwards the KV cache holds nothing (ae_engine_pos 0).
 * Errors (-1, err): tokens or c NULL, n_windows < 1, seqlen outside [1, max_seq], an engine mode other
 * than fp16 or with kv4, c of another shape (layers and widths named), a token outside the vocabulary
 * (window and position named), out of (device) memory (bytes named), forward / CUDA errors. */
int ae_engine_calib_sumsq(ae_engine *e, const int *tokens, int n_windows, int seqlen, ae_calib *c, char *err);

/* Where the calibration forward runs: the device and the engine options that matter for it. */
typedef struct {
    ae_device device;
    int       nthreads;      /* cpu: 0 = all cores                                                 */
    int       gpu;           /* cuda: device index                                                 */
    int       layer_major;   /* cuda: as ae_engine_opts (0 auto, 1 always, -1 never)               */
    size_t    gpu_mem_limit; /* cuda: as ae_engine_opts (0 = 90% of the device)                    */
} ae_calib_where;

/* ae_calibrate (forward.h) on the device `where` says (NULL: the cpu with all cores): an FP16 engine
 * (ae_engine_new with max_seq = seqlen) and ae_engine_calib_sumsq, then each site's channels sorted
 * ascending by Σx² (ties: lower channel first). desc [desc_len] (may be NULL) receives where it ran:
 * "cpu (N threads)" or "cuda (<GPU name>)" / "cuda (<GPU name>, layer-major)". A cuda calibration sees fp16
 * activations where the cpu one sees fp32: sums differ by about fp16 rounding (relative ~1e-3), so
 * channels whose sums are that close may be ordered differently. Errors: those of ae_calibrate,
 * ae_engine_new and ae_engine_calib_sumsq. */
int ae_calibrate_on(const ae_model *m, const int *tokens, int n_windows, int seqlen, const ae_calib_where *where,
                    ae_calib **out, char *desc, size_t desc_len, char *err);

/* ae_calib_obtain (forward.h) with the forward on `where` (NULL: cpu, all cores). The cache key of a
 * cuda calibration also holds "device=cuda" and its file is "calib-<model dir name>-cuda-<16 hex>.bin"
 * (a cpu calibration keeps the key and name of ae_calib_obtain, so its cache files stay valid); the
 * log says which device computed it ("calibration: N windows x T tokens of FILE on DEVICE in S s"). */
int ae_calib_obtain_on(const ae_model *m, const struct ae_tokenizer *tok, int seqlen, int n_windows,
                       const char *cache_dir, const ae_calib_where *where, FILE *log, ae_calib **out,
                       char *path_out, char *err);

#endif
