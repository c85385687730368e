/* ak_ops.h — LLaMA forward building blocks on the GPU (prefix ak_ops_): embeddings, RMSNorm, RoPE,
 * KV cache (with the 4-bit fake-quant), GQA causal flash attention, SwiGLU, residual adds, cuBLAS
 * linears, dtype conversion and the perplexity reductions. Implemented in kernels/ak_ops.cu; a build
 * without CUDA (make CUDA=0) links kernels/ak_ops_nocuda.c, where every call fails with
 * "built without CUDA".
 *
 * Numerics follow Hugging Face fp16 inference (transformers modeling_llama.py, eager path): activations
 * are fp16 between ops; every fp16 "op" is computed in fp32 and rounded once to fp16 (RNE), which is
 * what PyTorch's CUDA elementwise kernels do (opmath = float) and equals the correctly rounded fp16
 * result for + and * (fp32 has >= 2·11+2 bits). Subnormals are kept, no --use_fast_math.
 *
 * Conventions
 *  - fp16 / bf16 tensors travel as uint16_t bit patterns, fp32 as float; all tensor pointers are DEVICE
 *    pointers unless the comment says "host". Shapes are row-major, [rows, cols]; `ld` arguments are
 *    row strides in elements (>= the row width).
 *  - Every op is enqueued on the context's stream (ak_ops_stream) and returns without waiting, except
 *    where the comment says it synchronizes (ops that return host results or check device data).
 *    Kernel execution errors therefore surface at the next synchronizing call (ak_ops_sync).
 *  - Errors: 0 on success, -1 with a message in err (AX_ERR_LEN bytes, may be NULL) that names the op
 *    and the tensor or argument. Arguments are checked on the host before any launch.
 *  - The context is bound to one device (ak_ops_new); each call makes that device current for the
 *    calling thread. A context is not thread-safe (one host thread at a time).
 */
#ifndef APEX4_AK_OPS_H
#define APEX4_AK_OPS_H

#include <stddef.h>
#include <stdint.h>
#include "aq.h"   /* AX_ERR_LEN */

/* ---- context ---------------------------------------------------------------------------------- */
/* Opaque: device id, a non-blocking CUDA stream, a cuBLAS handle bound to it, a scratch buffer that
 * grows on demand (host->device copies of token ids, per-row results), the RoPE cos/sin table and two
 * events marking the staging slots of ak_ops_upload_async. Owners in pairs: ak_ops_new / ak_ops_free. */
typedef struct ak_ops ak_ops;

/* Create a context on CUDA device `device` (0-based). Errors: no such device / no driver, stream,
 * event or cuBLAS creation failure. */
int  ak_ops_new(int device, ak_ops **out, char *err);
/* Waits for the stream, then frees everything the context owns (not the caller's ak_ops_alloc blocks). */
void ak_ops_free(ak_ops *o);
/* The context's stream as a cudaStream_t (void * here so that C callers need no CUDA headers), for
 * other kernels that must run in order with these ops; the cuBLAS handle (cublasHandle_t). */
void *ak_ops_stream(const ak_ops *o);
void *ak_ops_cublas(const ak_ops *o);
/* Wait for everything enqueued so far; reports an asynchronous kernel failure naming the first op
 * that failed if known ("ak_ops_sync: <CUDA error>"). */
int  ak_ops_sync(ak_ops *o, char *err);

/* Device memory helpers (cudaMalloc / cudaFree / cudaMemcpy on the context's stream).
 * ak_ops_alloc: bytes >= 1; `what` names the tensor in the out-of-memory message (bytes named).
 * ak_ops_upload / ak_ops_download: synchronous with respect to the host (they wait for the stream,
 * so a download sees every op enqueued before it). ak_ops_zero: enqueued memset to 0. */
int  ak_ops_alloc(ak_ops *o, size_t bytes, void **dptr, const char *what, char *err);
void ak_ops_dfree(ak_ops *o, void *dptr);
int  ak_ops_upload(ak_ops *o, void *dst, const void *src_host, size_t bytes, char *err);
int  ak_ops_download(ak_ops *o, void *dst_host, const void *src, size_t bytes, char *err);
int  ak_ops_zero(ak_ops *o, void *dptr, size_t bytes, char *err);
/* Page-locked (pinned) host memory for staging uploads: cudaHostAlloc / cudaFreeHost. `what` names the
 * buffer in the error message; fails (-1) when the driver cannot lock that much memory (callers may
 * fall back to malloc). ak_ops_host_free(NULL) is a no-op. */
int  ak_ops_host_alloc(ak_ops *o, size_t bytes, void **p, const char *what, char *err);
void ak_ops_host_free(ak_ops *o, void *p);
/* Double-buffered staging: ak_ops_upload_async enqueues the host->device copy of `bytes` on the
 * context's stream (in order with every op before and after it) WITHOUT waiting, and marks staging
 * slot `slot` (0 or 1) busy until the copy completes; ak_ops_slot_wait(o, slot) blocks the host until
 * the last copy marked on that slot has completed (at once if none was). The caller must not write
 * src_host again before waiting for its slot. src_host should be pinned (ak_ops_host_alloc) for the
 * copy to overlap host work; pageable memory works but the copy is then synchronous. Errors: bad slot,
 * NULL pointers, CUDA failures (named). */
int  ak_ops_upload_async(ak_ops *o, void *dst, const void *src_host, size_t bytes, int slot, char *err);
int  ak_ops_slot_wait(ak_ops *o, int slot, char *err);

/* ---- conversion ------------------------------------------------------------------------------- */
typedef enum { AK_OPS_F32 = 0, AK_OPS_BF16 = 1, AK_OPS_F16 = 2 } ak_ops_dtype;
/* dst [n] fp16 = src [n] (fp32, bf16 bits or fp16 bits) rounded to nearest even with overflow to inf,
 * i.e. quant/aq.h aq_f32_to_f16 (of aq_bf16_to_f32 for bf16, exact widening), subnormals kept.
 * As aq_f32_to_f16_checked, a NaN/inf input or a value that overflows fp16 (|v| > 65504 after
 * rounding) is an error naming `what` and the first such flat index (the rest of dst is written).
 * Synchronizes (reads back the error flag). src and dst must not overlap (except src == dst for F16). */
int ak_ops_to_f16(ak_ops *o, ak_ops_dtype src_type, const void *src, size_t n, uint16_t *dst,
                  const char *what, char *err);

/* ---- embeddings ------------------------------------------------------------------------------- */
/* x [T, dim] fp16 = table [vocab, dim] fp16 rows tokens[t] (HF nn.Embedding). tokens [T] int32 is a
 * HOST array, checked before launch: a token outside [0, vocab) is an error naming its index and
 * value. T >= 1, dim >= 1. */
int ak_ops_embed(ak_ops *o, const int32_t *tokens, int T, const uint16_t *table, int vocab, int dim,
                 uint16_t *x, char *err);

/* ---- RMSNorm ---------------------------------------------------------------------------------- */
/* HF LlamaRMSNorm on each row of x [T, dim] fp16: h = float(x); var = mean(h²) (fp32 squares summed
 * in fp32 by a block tree, divided by dim); y = fp16(h · 1/sqrt(var + eps)) (IEEE sqrt and division,
 * fp32); out = fp16(w · y) (fp16 multiply) with w [dim] fp16. out [T, dim] fp16 may equal x.
 * Errors: T < 1, dim < 1, eps not finite or < 0. */
int ak_ops_rmsnorm(ak_ops *o, const uint16_t *x, const uint16_t *w, int T, int dim, float eps,
                   uint16_t *out, char *err);
/* The residual add fused in front (HF LlamaDecoderLayer "hidden_states = residual + hidden_states"):
 * x [T, dim] fp16 += r [T, dim] fp16 (fp16 add, written back to x), then out = rmsnorm(x) as above.
 * out must not alias r; out may alias neither x nor r (x is read again). */
int ak_ops_add_rmsnorm(ak_ops *o, uint16_t *x, const uint16_t *r, const uint16_t *w, int T, int dim,
                       float eps, uint16_t *out, char *err);

/* ---- RoPE (rotate-half) ------------------------------------------------------------------------ */
typedef struct {
    int   head_dim;          /* even, 2..512                                                      */
    float theta;             /* rope_theta (> 0)                                                  */
    int   llama3;            /* rope_scaling rope_type "llama3"                                   */
    float factor, low_freq_factor, high_freq_factor; /* llama3 only; high > low > 0, factor > 0   */
    int   orig_max_pos;      /* llama3: original_max_position_embeddings (> 0)                    */
} ak_ops_rope_cfg;
/* Build the context's cos/sin table for positions 0..max_pos-1 (replacing any earlier table):
 * inv_freq[i] = 1 / powf(theta, (float)(2i) / (float)head_dim) in fp32, with llama3 scaling exactly
 * as eval/forward.c rope_tables (HF _compute_llama3_parameters, evaluated in double, rounded to fp32);
 * then on the device, as HF LlamaRotaryEmbedding.forward: freqs = (float)p · inv_freq (fp32
 * product), cos/sin by CUDA cosf/sinf in fp32 (PyTorch's CUDA kernels call the same functions),
 * attention_scaling 1, cast to fp16. Table: [max_pos, head_dim/2] fp16 each (HF's emb = cat(freqs,
 * freqs) repeats it). Errors: bad cfg fields (named), max_pos < 1 or > 1<<20, out of memory. */
int ak_ops_rope_init(ak_ops *o, const ak_ops_rope_cfg *cfg, int max_pos, char *err);
/* In place on q [T, n_heads, head_dim] (row stride q_ld >= n_heads·head_dim) and k [T, n_kv,
 * head_dim] (row stride k_ld) fp16 at positions pos0 .. pos0+T-1, as HF apply_rotary_pos_emb (eager):
 * with x1 = x[:half], x2 = x[half:], c, s the fp16 table entries,
 *   out[:half] = fp16(fp16(x1·c) + fp16(−x2·s)),  out[half:] = fp16(fp16(x2·c) + fp16(x1·s)).
 * k may be NULL (n_kv ignored). Errors: no table (ak_ops_rope_init), head_dim differs from the
 * table's (the model's), pos0 < 0 or pos0 + T > the table's max_pos, bad counts or strides. */
int ak_ops_rope(ak_ops *o, uint16_t *q, int q_ld, int n_heads, uint16_t *k, int k_ld, int n_kv, int T,
                int pos0, char *err);
/* The same for packed sequences (zero-shot requests run side by side in one forward, each from
 * position 0): row t is at position t - seg[t], seg [T] int32 DEVICE array = the packed row where
 * row t's sequence starts (non-decreasing, seg[t] <= t). Errors: as ak_ops_rope, seg NULL. */
int ak_ops_rope_packed(ak_ops *o, uint16_t *q, int q_ld, int n_heads, uint16_t *k, int k_ld, int n_kv, int T,
                       const int32_t *seg, char *err);

/* ---- KV cache ----------------------------------------------------------------------------------- */
/* Append T new positions to one layer's cache: k_cache, v_cache [max_seq, n_kv, head_dim] fp16 rows
 * pos0 .. pos0+T-1 = k, v [T, n_kv, head_dim] fp16 (row stride ld, the same for k and v: e.g. the
 * k and v parts of a fused qkv output). With kv4 != 0 each (token, kv head) vector of head_dim
 * values is stored fake-quantized as ak_ops_kv4_fakequant (keys after RoPE: call ak_ops_rope first,
 * as eval/forward.c). Errors: pos0 < 0, pos0 + T > max_seq, head_dim outside 1..4096, bad counts or ld. */
int ak_ops_kv_store(ak_ops *o, const uint16_t *k, const uint16_t *v, int ld, int T, int pos0, int n_kv,
                    int head_dim, int kv4, uint16_t *k_cache, uint16_t *v_cache, int max_seq, char *err);
/* In place on x [rows, n] fp16: each row is one (token, head) vector, fake-quantized to 4 bits
 * asymmetric (NUMERICS.md "KV-cache 4-bit", apex4 clarification 7) — the same operations as
 * quant/aq.h aq_kv4_fakequant (fp32 range/15, fp16 scale, rintf, double offset arithmetic, one fp32
 * multiply; ties of the min/max between +0 and −0 resolved to the first in index order as its
 * sequential scan does), then the fp32 result rounded to fp16: byte-identical to
 * aq_f32_to_f16(aq_kv4_fakequant(aq_f16_to_f32(x))). A row with a NaN/inf is left unchanged, as there.
 * Errors: rows < 1, n outside 1..4096. */
int ak_ops_kv4_fakequant(ak_ops *o, uint16_t *x, int rows, int n, char *err);

/* ---- attention -------------------------------------------------------------------------------- */
typedef enum {
    AK_ATTN_AUTO   = 0,   /* tensor-core kernel when it takes the shape (ak_ops_attention_tc_ok), else simple */
    AK_ATTN_SIMPLE = 1,   /* reference/fallback: one warp per (query, head), fp32 everything          */
    AK_ATTN_TC     = 2,   /* flash-attention-2 style, mma.sync m16n8k16 fp16 -> fp32: TC128 when T >=
                             AK_ATTN_TC128_MIN_T query rows, else TC64                                   */
    AK_ATTN_TC64   = 3,   /* the TC kernel with 64-row blocks (16 rows per warp, Q in registers)        */
    AK_ATTN_TC128  = 4    /* the TC kernel with 128-row blocks (32 rows per warp, 2 mma per fragment)   */
} ak_attn_impl;
/* fewest new query rows for which AK_ATTN_AUTO / AK_ATTN_TC take the 128-row blocks (measured on an
 * H200: kernels/NOTES.md "attention") */
#define AK_ATTN_TC128_MIN_T 512
/* Causal GQA attention of T new queries at positions pos0 .. pos0+T-1 over one layer's cache
 * (call ak_ops_kv_store for those positions first): for query t and head h (kv head h / (n_heads /
 * n_kv), HF repeat_kv), keys/values 0 .. pos0+t,
 *   out[t, h] = Σ_j softmax_j(q·k_j · 1/sqrt(head_dim)) v_j,
 * with q [T, n_heads, head_dim] fp16 (row stride q_ld), k_cache, v_cache [max_seq, n_kv, head_dim]
 * fp16, out [T, n_heads·head_dim] fp16. Never forms the T x T matrix (flash attention: Dao et al.
 * 2022, FlashAttention-2 2023: online softmax with fp32 running max and sum, one pass over K/V tiles).
 * SIMPLE: scores, softmax and P·V in fp32 (expf), the output rounded once to fp16; any head_dim in
 * 1..256. TC: 64 queries x 64 keys per tile, S = QKᵀ by mma (fp32 accumulate), softmax statistics in
 * fp32 (exp2f with log2(e) folded into the scale), P rounded to fp16 for P·V by mma (fp32 accumulate),
 * as FlashAttention-2 does; head_dim in {32, 64, 96, 128}, q_ld % 8 == 0, 16-byte aligned pointers.
 * Errors: n_heads % n_kv != 0, pos0 < 0, pos0 + T > max_seq, q_ld < n_heads·head_dim, head_dim not
 * taken by the chosen kernel (named), launch failure. */
int ak_ops_attention(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k_cache,
                     const uint16_t *v_cache, int max_seq, int T, int pos0, int n_heads, int n_kv,
                     int head_dim, uint16_t *out, char *err);
/* Packed sequences (pos0 = 0; the cache holds the T packed rows, ak_ops_kv_store at pos0 0): query
 * row t attends keys seg[t] .. t only (its own sequence, causal), seg [T] int32 DEVICE array as in
 * ak_ops_rope_packed — a block-diagonal causal mask (FlashAttention varlen / cu_seqlens). Same
 * kernels, numerics and errors as ak_ops_attention; seg NULL is an error. */
int ak_ops_attention_packed(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k_cache,
                            const uint16_t *v_cache, int max_seq, int T, const int32_t *seg, int n_heads, int n_kv,
                            int head_dim, uint16_t *out, char *err);
/* Prefill without a cache: keys and values read where the fused q|k|v GEMM wrote them, k and v
 * [T, n_kv, head_dim] fp16 with row stride kv_ld (>= n_kv·head_dim; a multiple of 8 for the TC
 * kernel), queries at positions 0 .. T-1 (seg NULL) or packed sequences (seg as ak_ops_attention_packed).
 * The same kernels and numbers as storing k, v into a cache (ak_ops_kv_store without kv4) and calling
 * ak_ops_attention / _packed with pos0 = 0; for a forward whose cache is not needed afterwards (a
 * perplexity window, a packed zero-shot call). Errors: as ak_ops_attention, a bad kv_ld. */
int ak_ops_attention_prefill(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k,
                             const uint16_t *v, int kv_ld, int T, const int32_t *seg, int n_heads, int n_kv,
                             int head_dim, uint16_t *out, char *err);
/* dst [n, width] fp16 = rows rows[0..n) of src [*, ld] fp16 (rows: DEVICE int32 [n], each a valid
 * row of src — not checked). Errors: n, width < 1, ld < width, NULL pointers. */
int ak_ops_gather_rows(ak_ops *o, const uint16_t *src, int ld, const int32_t *rows, int n, int width,
                       uint16_t *dst, char *err);
/* 1 when the tensor-core kernel takes (head_dim, q_ld, pointers), else 0. */
int ak_ops_attention_tc_ok(int head_dim, int q_ld, const void *q, const void *k_cache,
                           const void *v_cache, const void *out);
/* Benchmark: time ak_ops_attention(impl) at prefill shape (pos0 = 0, T = max_seq, random fp16 inputs
 * in [-2, 2) drawn on the device) with CUDA events: `warmup` untimed calls, then the median of `runs`
 * timed calls in ms. Allocates and frees its own buffers. Errors: as ak_ops_attention, out of memory. */
int ak_ops_bench_attention(ak_ops *o, ak_attn_impl impl, int T, int n_heads, int n_kv, int head_dim,
                           int warmup, int runs, double *ms_median, char *err);

/* ---- seeded virtual weights ---------------------------------------------------------------------- */
/* dst [n] fp16 = samples first .. first+n-1 of eval/model.h ae_gen_normal(tensor_seed, std) (make-model's
 * splitmix64 + Box–Muller stream: pair p from state seed + 2p·γ, double arithmetic, then (float), then
 * fp16 RNE as make-model writes F16) generated on the device. CUDA's double log/sqrt/cos/sin may differ
 * from glibc's by an ulp of a double, which changes the fp16 value only when the float falls within
 * 2^-29 of a rounding boundary; the test compares with the CPU stream. Errors: n == 0, std < 0 or > 1e4. */
int ak_ops_gen_normal_f16(ak_ops *o, uint64_t tensor_seed, double std, size_t first, size_t n, uint16_t *dst,
                          char *err);
/* dst [n] fp16 = value (fp16 bits; the RMSNorm weights 1.0 = 0x3c00 of a virtual model). */
int ak_ops_fill_f16(ak_ops *o, uint16_t value, size_t n, uint16_t *dst, char *err);

/* ---- MLP and residual --------------------------------------------------------------------------- */
/* out [T, hidden] fp16 = fp16(silu(gate)) · up (fp16 multiply), with silu as PyTorch's CUDA F.silu on
 * fp16: g = float(gate); g / (1 + expf(−g)) in fp32 (IEEE division), rounded to fp16 (HF LlamaMLP
 * act_fn(gate_proj(x)) * up_proj(x)). gate, up [T, hidden] fp16 with row stride ld_in (>= hidden; a
 * fused gate|up output passes up = gate + hidden). out may equal gate. Errors: bad counts/strides. */
int ak_ops_swiglu(ak_ops *o, const uint16_t *gate, const uint16_t *up, int ld_in, int T, int hidden,
                  uint16_t *out, char *err);
/* x [n] fp16 += y [n] fp16 (fp16 add: fp16(float(x) + float(y))). Errors: n < 1. */
int ak_ops_add(ak_ops *o, uint16_t *x, const uint16_t *y, size_t n, char *err);

/* ---- linears (cuBLAS) ------------------------------------------------------------------------- */
/* y [T, N] fp16 = x [T, K] fp16 · W [N, K]ᵀ fp16 (nn.Linear without bias), cublasGemmEx with
 * CUBLAS_COMPUTE_32F (fp32 accumulate), default math mode (tensor cores; cuBLAS may use its fp16
 * split-K reduction like PyTorch's default allow_fp16_reduced_precision_reduction). Errors: T, N, K
 * < 1, cuBLAS failure (status named). */
int ak_ops_linear(ak_ops *o, const uint16_t *x, int T, int K, const uint16_t *w, int N, uint16_t *y,
                  char *err);
/* The same with fp32 output y [T, N] (lm_head: logits fp32, fp16 inputs, fp32 accumulate and store;
 * HF computes fp16 logits then .float(): this keeps the accumulator's bits instead). */
int ak_ops_linear_f32(ak_ops *o, const uint16_t *x, int T, int K, const uint16_t *w, int N, float *y,
                      char *err);

/* ---- perplexity reductions (logits stay on the device) -------------------------------------------- */
/* Per row of logits l [T, V] fp32 (row stride ld), as eval/ppl.c does on the CPU (ae_score_row):
 * max and first argmax (ties to the lowest id; NaN entries never win); lse = max + log Σ_v e_v with
 * e_v = exp(l_v − max) by the same fp32 polynomial as eval/forward.c ae_exp_shifted (bit-identical
 * per element), summed in double (block tree order instead of index order: ~1e-16 relative);
 *   nll[t]    = lse − (double)l[targets[t]]                      (nats; targets is a HOST array)
 *   argmax[t] = the first argmax of l
 * and with a reference (the FP16 run, same rows):
 *   ref_kind AK_OPS_REF_LOGITS: ref [T, V] fp32 logits a; ref_lse from a as above, p_v =
 *     exp((float)((double)a_v − ref_lse)), kld = Σ p_v·(a_v − l_v) (fp32 difference and product, sum
 *     in double) + (lse − ref_lse)·Σ p_v — the operations of ae_score_row: agrees with it to ~1e-12.
 *   ref_kind AK_OPS_REF_LOGP: ref [T, V] fp32 log-probs a' (ak_ops_logprobs of the FP16 logits);
 *     p_v = exp(a'_v) (same exp), kld = Σ p_v·((double)a'_v − ((double)l_v − lse)) in double. Differs
 *     from ae_score_row only by Σ p_v·ε_v, ε_v the fp32 rounding of a'_v (< 1e-7·entropy in nats).
 *   kld[t] = KL(P_ref || Q) (llama.cpp perplexity --kl-divergence), same[t] = (argmax l == argmax ref).
 * Outputs are HOST arrays [T] and may each be NULL (not computed/written); kld and same need ref.
 * Synchronizes. Errors: T < 1, V < 2, ld/ref_ld < V, a target outside [0, V) (index named), a row
 * whose lse (or ref lse) is not finite ("non-finite logits in row t"). */
typedef enum { AK_OPS_REF_LOGITS = 0, AK_OPS_REF_LOGP = 1 } ak_ops_ref_kind;
int ak_ops_score(ak_ops *o, const float *logits, long ld, int T, int V, const int32_t *targets,
                 const float *ref, long ref_ld, ak_ops_ref_kind ref_kind, double *nll, int32_t *argmax,
                 double *kld, int32_t *same, char *err);
/* logp [T, V] fp32 (row stride logp_ld) = (float)((double)l_v − lse) per row, lse as above (the
 * ref_p exponent eval/ppl.c ref_rows computes); logp may equal logits (in place, same ld). argmax
 * (HOST [T], may be NULL) gets each row's first argmax of l (keep it: ak_ops_score recomputes the
 * reference argmax from logp, where fp32 rounding can merge two nearly equal top logits; the lower
 * id then wins). Synchronizes. Errors: as ak_ops_score (a row with a non-finite lse is named). */
int ak_ops_logprobs(ak_ops *o, const float *logits, long ld, int T, int V, float *logp, long logp_ld,
                    int32_t *argmax, char *err);

#endif
