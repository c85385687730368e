/* ak.h — apex4 CUDA kernels, host-side C API (prefix ak_). Implemented in kernels/ak_cuda.cu etc. when the
 * build has CUDA (make CUDA=1, the default when nvcc is found), by kernels/ak_nocuda.c otherwise.
 *
 * The kernels implement NUMERICS.md bit-exactly; they never re-implement the contract on the host:
 * results come back in the CPU reference's layout (quant/aq.h) so they can be compared byte for byte.
 * Two levels: host-to-host calls (ak_quantize_x, ak_gemm*: upload, run, download per call, for apex4
 * check and tests) built on the device-resident API (ak_ctx, ak_dqt, ak_*_dev: a context, its stream
 * and device tensors, for an engine). kernels/NOTES.md "Device-resident API" describes the design.
 * Errors: 0 on success, non-zero with a message in err (AX_ERR_LEN bytes) otherwise.
 */
#ifndef APEX4_AK_H
#define APEX4_AK_H

#include "aq.h"

/* Number of usable CUDA devices; 0 when the build has no CUDA or no device/driver is present. */
int ak_device_count(void);
/* One-line description of device 0 (name, SMs, compute capability), or a reason it is unavailable. */
void ak_device_describe(char *buf, size_t len);

/* GEMM implementation paths. */
typedef enum {
    AK_PATH_AUTO = -1,  /* planner input only (ak_gemm_plan_ex): the path the planner prefers      */
    AK_PATH_INT8 = 0,   /* int4 codes widened to int8 into mma.sync.m16n8k32.s8 (Hopper and all) */
    AK_PATH_INT4 = 1,   /* native mma.sync.m16n8k64.s4 (sm_80/86/89; emulated on sm_90)          */
    AK_PATH_WGMMA = 2,  /* Hopper only (compute capability 9.x, sm_90a code): wgmma.mma_async s8
                           with the group epilogue overlapped with the next group's tensor work
                           (kernels/ak_gemm_sm90.cu). GROUP and MIXED epilogues, no outlier part
                           (atom modes), groups of 32, 64, a multiple of 128 codes or the whole row */
    AK_PATH_WGMMA_SYNC = 3,  /* the same kernel with one accumulator set and the epilogue after
                                each group's wgmma completes (the simple version; check and tests) */
    AK_PATH_WGMMA_NOEPI = 4  /* BENCHMARK ONLY (ak_bench_gemm): AK_PATH_WGMMA with the epilogue's
                                conversion and scaling switched off; Y is not the contract's, so
                                ak_gemm* refuse it */
} ak_path;
/* Short name of a path ("int8", "int4", "wgmma", "wgmma-sync", "wgmma-noepi"; "auto"; "?"). */
static inline const char *ak_path_name(int p) {
    static const char *const names[] = {"int8", "int4", "wgmma", "wgmma-sync", "wgmma-noepi"};
    return p == AK_PATH_AUTO ? "auto" : p >= 0 && p <= AK_PATH_WGMMA_NOEPI ? names[p] : "?";
}

/* Activation quantization on the GPU (host wrapper over ak_quantize_x_dev on device 0):
 * x [M,K] fp16 bits (host) -> out in aq_quantize_x's layout
 * (host memory; caller frees with aq_qtensor_free), byte-identical to aq_quantize_x (NUMERICS.md
 * "Symmetric quantizer": per token and group, clip m->x.clip, fp16 scales; ATOM: permuted channels,
 * 4-bit main groups + INT8 per-token outliers; MIXED: per token). perm [K] int32 as in aq_quantize_x
 * (ATOM only). Errors: unsupported mode/shape (ak_supports), perm missing or not a permutation,
 * non-finite x (message names [row, col]), no device, CUDA failure. */
int ak_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                  aq_qtensor *out, char *err);

/* GEMM on the GPU from host-side quantized operands (aq_quantize_* layout): y [M,N] fp16 (host).
 * Host wrapper over ak_dqt_upload + ak_gemm_dev_ex (a context on device 0 per call; tile
 * configuration from ak_gemm_plan).
 * Bit-exact with aq_gemm(qx, qw, k_splits = 1, ...) on every path (int8, int4; wgmma and wgmma-sync
 * where they serve: ak_gemm_plan_ex). Any M, N >= 1; K and groups as in ak_supports. Errors: layouts
 * of qx/qw differ (mode, K, groups, outliers), unsupported shape, a path that does not serve the
 * mode or GPU (AK_PATH_WGMMA_NOEPI is benchmark-only: refused), CUDA failure (message names the
 * step). */
int ak_gemm(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, uint16_t *y, char *err);
/* The same with split-K over k_splits blocks along K (1..65535); bit-exact with
 * aq_gemm(qx, qw, k_splits, ...): multi-group modes (w4a4-gN, atom) use the contract's split at group
 * boundaries with fp32 partials combined in split order; single-group modes (w4a4-pc, w8a8) and
 * w4a4-mixed split the exact int32 sum, so Y does not depend on k_splits (as in the reference). */
int ak_gemm_ex(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, int k_splits, uint16_t *y,
               char *err);
/* The split count the kernels pick for (mode, M, N, K): > 1 only when the tile grid alone would
 * leave most of the GPU's SMs idle (small M); the benchmark uses it, apex4 check verifies it.
 * ak_gemm_plan (below) for the SM count of the calling thread's current CUDA device (0 unless a context
 * on another device made it current); 1 without a device or for a non-integer mode. */
int ak_gemm_splits(const aq_mode *m, int M, int N, int K);

/* Exhaustive device self-test of the activation quantizer's division-free rounding (ak_quant.cu
 * code_fast) against the contract's CUDA spelling clamp(__float2int_rn(__fdiv_rn(v, s))) for every
 * positive finite fp16 s and every finite fp16 v, 4-bit and 8-bit ranges. pairs = pairs checked,
 * mismatches = how many differ (err names one). -1 on a CUDA failure. */
int ak_selftest_rounding(long long *pairs, long long *mismatches, char *err);

/* ---- device-resident API (kernels/ak_cuda.cu, ak_wquant.cu, ak_plan.cu) --------------------------
 * An engine keeps weights, activations and outputs on the GPU and chains these calls on one stream;
 * nothing below copies to the host except ak_download / ak_dqt_download and the error checks.
 * Pointers named "device" are device memory of the context's GPU (from ak_dmalloc or ak_dqt_alloc);
 * fp16 travels as uint16_t bit patterns, as in quant/aq.h.
 *
 * Error checks that need the device's answer (a non-finite input, a perm that is not a permutation,
 * a dequantized value that overflows fp16) are reported by the call itself while the context is in
 * synchronous-check mode (the default: the call waits for its kernels). With
 * ak_ctx_set_sync_checks(ctx, 0) the activation calls (ak_quantize_x_dev, ak_fakequant_x_dev) do not
 * wait: their findings are kept on the device and the FIRST failing call (in call order) is reported
 * by the next ak_ctx_check / ak_ctx_sync (error naming that call's operation and tensor). Weight
 * calls (ak_quantize_w_dev, ak_dequantize_w_dev, ak_fakequant_w_dev) always check synchronously.
 * Kernel failures surface at the next synchronizing call (message names the step). */

/* Opaque per-GPU context: device index, one CUDA stream (all calls below are ordered on it), the
 * device facts queried once, the split-K workspace (grown on demand) and the error-check slots.
 * Owners in pairs: ak_ctx_new / ak_ctx_free. One thread at a time per context. */
typedef struct ak_ctx ak_ctx;

/* Device facts queried once by ak_ctx_new. */
typedef struct {
    int    device;              /* CUDA device index                                            */
    int    sms;                 /* streaming multiprocessors (the GEMM planner's unit)          */
    int    cc_major, cc_minor;  /* compute capability                                           */
    size_t total_mem;           /* bytes of device memory                                       */
    int    smem_optin;          /* max dynamic shared memory per block (bytes, opt-in)          */
    int    cc;                  /* 10 * cc_major + cc_minor (the planner's input)              */
} ak_ctx_facts;

/* Create a context on CUDA device `device` (0-based). Errors: no CUDA device, device out of range,
 * CUDA failure (stream creation). *out is NULL on error. */
int  ak_ctx_new(int device, ak_ctx **out, char *err);
/* Free the context (waits for its stream, frees its workspace). NULL is a no-op. Device buffers and
 * ak_dqt tensors are freed by their own calls before this. */
void ak_ctx_free(ak_ctx *c);
/* Wait for every call queued on the context, then ak_ctx_check. Errors: a kernel failed (CUDA
 * message), or a deferred check found a bad input (message names the call and tensor). */
int  ak_ctx_sync(ak_ctx *c, char *err);
/* Report (and clear) the first deferred check failure since the last check; waits for the stream.
 * 0 when every call so far was clean. */
int  ak_ctx_check(ak_ctx *c, char *err);
/* on = 1 (default): activation calls wait and report their own check failures; on = 0: deferred. */
void ak_ctx_set_sync_checks(ak_ctx *c, int on);
/* The facts queried at creation. */
const ak_ctx_facts *ak_ctx_info(const ak_ctx *c);
/* The context's CUDA stream as a cudaStream_t cast to void * (other modules, e.g. cuBLAS calls, order
 * their work on it); NULL for a NULL context or a build without CUDA. */
void *ak_ctx_stream(const ak_ctx *c);
/* Order the context's work on `stream` (a cudaStream_t of the context's device, cast to void *, not
 * owned: the caller keeps it alive until ak_ctx_free or another ak_ctx_set_stream) instead of its own
 * stream; NULL returns to its own. Waits for the work queued on the previous stream first. Returns 0,
 * or -1 for a NULL context / a build without CUDA / a failed wait. */
int   ak_ctx_set_stream(ak_ctx *c, void *stream);

/* Device buffers on the context's GPU. ak_dmalloc: `bytes` (0 allocates a 16-byte placeholder) into
 * *out; errors name `what` and the size. ak_dfree(NULL) is a no-op. ak_upload / ak_download copy
 * `bytes` host <-> device in stream order and return when the copy is complete (they synchronize
 * the stream); errors name `what`. ak_dmemset sets `bytes` bytes to `value` in stream order. */
int  ak_dmalloc(ak_ctx *c, size_t bytes, void **out, const char *what, char *err);
void ak_dfree(ak_ctx *c, void *p);
int  ak_upload(ak_ctx *c, void *dst_dev, const void *src_host, size_t bytes, const char *what, char *err);
int  ak_download(ak_ctx *c, void *dst_host, const void *src_dev, size_t bytes, const char *what, char *err);
int  ak_dmemset(ak_ctx *c, void *dst_dev, int value, size_t bytes, const char *what, char *err);

/* One quantized part on the device, aq_qmat's layout exactly (quant/aq.h "quantized matrices"):
 * codes [rows, (cols+1)/2] packed int4 or [rows, cols] int8; scales fp16 [rows, ngroups] (MIXED
 * weights: [rows] S, and sub u8 [rows, ngroups]); `rows` here is the allocated row count. */
typedef struct {
    int       rows, cols, bits, group, ngroups;   /* as aq_qmat (group may exceed cols)          */
    uint8_t  *codes;                              /* device                                      */
    uint16_t *scales;                             /* device fp16                                 */
    uint8_t  *sub;                                /* device, MIXED weights only, else NULL       */
} ak_dqmat;

/* A device-resident quantized X or W (aq_qtensor's layout, NUMERICS.md "Atom-style": main part of the
 * K - o permuted channels, 8-bit outlier part of o channels, perm [K] original index of permuted
 * channel i). rows = rows currently holding data (<= cap, set by the quantize call); cap = rows
 * allocated. The tensor is bound to the mode and to X/W (MIXED weights have sub != NULL). */
typedef struct {
    aq_mode  mode;
    int      rows, cap, K;
    ak_dqmat main, outl;     /* outl.rows == 0 and NULL pointers when there is no outlier part   */
    int32_t *perm;           /* ATOM: device [K] int32 (owned copy); NULL otherwise              */
} ak_dqt;

/* Allocate a quantized tensor for `cap` rows of K channels in mode m (integer modes only), as X
 * (is_weight = 0) or W (is_weight = 1; only MIXED differs: per-row S + sub-scales), in the layout
 * aq_quantize_x / aq_quantize_w produce. rows starts at 0. Errors (naming `what`): non-integer mode,
 * cap < 1 or K < 1, ATOM with K - o < 1, out of device memory. */
int  ak_dqt_alloc(ak_ctx *c, const aq_mode *m, int is_weight, int cap, int K, ak_dqt *out,
                  const char *what, char *err);
/* Free every device array of t and zero it. NULL or a zeroed tensor is a no-op. */
void ak_dqt_free(ak_ctx *c, ak_dqt *t);
/* Allocate *out like src (X or W, told by src->main.sub: MIXED weights) and upload src's bytes.
 * Errors: src empty or inconsistent (layout differs from its mode's, ATOM without perm), device. */
int  ak_dqt_upload(ak_ctx *c, const aq_qtensor *src, ak_dqt *out, const char *what, char *err);
/* Download the src->rows rows of src into a new host aq_qtensor (caller: aq_qtensor_free), byte for
 * byte comparable with the CPU reference. Errors: src->rows == 0 (nothing quantized yet), host OOM,
 * CUDA failure. */
int  ak_dqt_download(ak_ctx *c, const ak_dqt *src, aq_qtensor *out, char *err);

/* Weight quantization on the GPU, byte-identical to aq_quantize_w (NUMERICS.md "Symmetric quantizer",
 * "Mixed granularity", "Atom-style"; quant/NUMERICS.md clarifications 1, 5, 6): every integer mode,
 * any N >= 1, K >= 1 and even group size (no multiple-of-32 requirement here). w: device fp16 [N, K];
 * perm: device int32 [K] (ATOM only, required there; NULL otherwise); out: from ak_dqt_alloc(m,
 * is_weight = 1, cap == N, K); out->rows = N on success. Synchronizes (one-time work). Errors
 * (naming `what`, NULL -> "W"): mode/shape/out mismatch, perm missing or not a permutation (index
 * named), non-finite w (first [row, col] in row-major order, as the reference), CUDA failure. */
int  ak_quantize_w_dev(ak_ctx *c, const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm,
                       ak_dqt *out, const char *what, char *err);

/* Activation quantization on the device (the ak_quantize_x kernel, byte-identical to aq_quantize_x):
 * x device fp16 [M, K]; perm device int32 [K] (ATOM only, validated on the device each call, copied
 * into out->perm); out from ak_dqt_alloc(m, is_weight = 0, cap >= M, K); out->rows = M. Shapes as
 * ak_supports (K % 32 == 0, groups % 32 == 0). Errors (naming `what`, NULL -> "X"): unsupported
 * mode/shape, out mismatch, perm missing/not a permutation, non-finite x at [row, col] (synchronous
 * checks: reported here; deferred: by ak_ctx_check), CUDA failure. */
int  ak_quantize_x_dev(ak_ctx *c, const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                       ak_dqt *out, const char *what, char *err);

/* RMSNorm and activation quantization in one kernel (kernels/ak_quant.cu rmsq_kernel; the engine's
 * exact integer route before q|k|v and gate|up): for each row t < M,
 *   r != NULL: x[t] = fp16_rne(x[t] + r[t]) written back (the fp16 add of ak_ops_add_rmsnorm);
 *   y[t] = fp16(w * fp16(x[t] * inv)), inv = 1 / sqrt(sum(x^2) / K + eps): kernels/ak_ops.cu
 *          rmsnorm8_kernel's operations, fp32 sum order and block tree, so y is byte for byte what
 *          ak_ops_add_rmsnorm (r != NULL) / ak_ops_rmsnorm (r == NULL) write where they take their
 *          16-byte route (dim % 8 == 0, aligned pointers: always the case here);
 *   out = ak_quantize_x_dev(m, y, perm): the same kernel arithmetic, so the same codes, scales,
 *          outlier part and perm copy; y itself is never written to global memory.
 * Source: HF LlamaRMSNorm (fp16 path, as ak_ops.h) then NUMERICS.md "Symmetric quantizer" / "Mixed
 * granularity" / "Atom-style". x device fp16 [M, K] (read, and written when r != NULL); r device
 * fp16 [M, K] or NULL (may not overlap x except x == r); w device fp16 [K]; x, r, w 16-byte aligned;
 * eps finite >= 0; perm device int32 [K] (ATOM only, validated on the device each call); out from
 * ak_dqt_alloc(m, is_weight = 0, cap >= M, K); out->rows = M. Every integer mode ak_supports takes
 * (GROUP, MIXED, ATOM; K % 32 == 0, 32 <= K <= AK_MAX_K, groups % 32 == 0). Errors (naming `what`,
 * NULL -> "X"): NULL x/w/mode/output, M or K < 1, bad eps, unsupported mode/shape, pointers not
 * 16-byte aligned (then use the two calls), out mismatch, perm missing/not a permutation, a non-finite
 * normalized value at [row, col] (as ak_quantize_x_dev names it, without the value's bits;
 * synchronous or deferred as ak_quantize_x_dev; x has been updated by then), CUDA failure. */
int  ak_rmsnorm_quantize_x_dev(ak_ctx *c, const aq_mode *m, uint16_t *x, const uint16_t *r, const uint16_t *w,
                               int M, int K, float eps, const int32_t *perm, ak_dqt *out, const char *what,
                               char *err);

/* GEMM on device operands: y device fp16 [qx->rows, qw->rows] = X·Wᵀ, bit-exact with
 * aq_gemm(qx, qw, k_splits, ...) (NUMERICS.md "Integer GEMM with group scales", "Mixed granularity",
 * "Atom-style", clarification 3). ak_gemm_dev: tile configuration, split count and path from the
 * launch planner (ak_gemm_plan_ex) for the context's SM count and compute capability; ak_gemm_dev_ex:
 * k_splits 1..65535 forced (0 = the planner's for that path), path given (int8, int4, wgmma,
 * wgmma-sync). The split-K workspace is the context's. Does not wait. Errors: operands' layouts
 * differ (mode, K, groups, outliers), qx not quantized yet, unsupported shape (ak_supports), bad
 * path/k_splits, a wgmma path the GPU or mode does not take (message says what it needs), launch
 * failure. */
int  ak_gemm_dev(ak_ctx *c, const ak_dqt *qx, const ak_dqt *qw, uint16_t *y, char *err);
int  ak_gemm_dev_ex(ak_ctx *c, const ak_dqt *qx, const ak_dqt *qw, ak_path path, int k_splits, uint16_t *y,
                    char *err);

/* The launch plan for (mode, M, N, K) on a GPU with `sms` SMs: kernel configuration, split count
 * (k_splits = 0: chosen; else forced) and split kind, path. The only place shapes map to launches
 * (ak_gemm_dev, ak_gemm_ex, ak_gemm_splits and the benchmark use it). cfg: the mma.sync tile
 * configuration for the shape: 1 = GEMV (M <= 16), 2 = 16 x 256 tiles (M <= 16, AK_GEMV = 0),
 * 3 = 64 x 128 tiles, 4 = 128 x 128 tiles (the WGMMA path has one 128 x 128 configuration and ignores
 * cfg). split_kind: 0 none, 1 exact int32 split, 2 the contract's group split. path: AK_PATH_WGMMA
 * when the calling thread's current CUDA device has compute capability 9.x, M >= 64 and the mode is
 * one the path serves (ak_gemm_plan_ex), else AK_PATH_INT8 (splits and path planned together).
 * Returns 0, or -1 for a non-integer mode, M, N < 1, K < 32, sms < 1 or k_splits outside 0..65535. */
typedef struct { int cfg, splits, split_kind; ak_path path; } ak_plan;
int  ak_gemm_plan(const aq_mode *m, int M, int N, int K, int sms, int k_splits, ak_plan *out);
/* The same for a GPU of compute capability cc (10 * major + minor; 0 = unknown: mma.sync paths only),
 * a pure function of its arguments. path = AK_PATH_AUTO: the planner's choice (AK_PATH_WGMMA on
 * cc 90..99 when it serves the mode and M >= 64 (AK_WGMMA_MIN_M), else AK_PATH_INT8); any other
 * path: the plan for that path (WGMMA_SYNC / WGMMA_NOEPI as WGMMA). Returns -1 as ak_gemm_plan, and
 * also for a path that cannot serve: a wgmma path on cc outside 90..99, or for a mode with an outlier
 * part, a group that is not 32, 64, a multiple of 128 codes or the whole row, or unequal code widths.
 * CUDA builds only (kernels/ak_plan.cu). */
int  ak_gemm_plan_ex(const aq_mode *m, int M, int N, int K, int sms, int cc, int path, int k_splits, ak_plan *out);
#define AK_WGMMA_MIN_M 64
/* 1: AK_PATH_AUTO may choose the wgmma path (cc 9.x, M >= AK_WGMMA_MIN_M, modes it serves). 0 (now): the
 * path is bit-exact on an H200 (`apex4 check --device cuda --paths wgmma,wgmma-sync` 560/560) but
 * slower than mma.sync for every mode except w4a4-g32 (README "Benchmarks", kernels/NOTES.md "wgmma
 * path"), so the planner (and the engine) stay on mma.sync; check, bench, tests and APEX4_GEMM_PATH
 * reach it by name. Build with -DAK_WGMMA_AUTO=1 (nvcc and cc) to let the planner choose it. */
#ifndef AK_WGMMA_AUTO
#define AK_WGMMA_AUTO 0
#endif

/* Dequantize a device quantized tensor to fp16 in the ORIGINAL channel order: out device fp16
 * [t->rows, t->K] = fp16_rne(float(q)·float(s)) (MIXED weights: fp16_rne(float(q)·(float(S)·u)), the
 * fp32 values aq_dequantize computes, then one RNE rounding to fp16: exact except for subnormal
 * products and |q·s| >= 65520). Works for X and W tensors. Synchronizes. Errors (naming `what`):
 * t empty, a value that overflows fp16 (first [row, col]), CUDA failure. */
int  ak_dequantize_w_dev(ak_ctx *c, const ak_dqt *t, uint16_t *out, const char *what, char *err);

/* Fake-quant of activations on the device: out device fp16 [M, K] = fp16_rne(aq_fakequant(m, is_weight
 * = 0, x)) for the fp16 input x device [M, K] (quant/NUMERICS.md clarification 2 on an fp16-exact
 * input; the final fp16 rounding is this call's addition: exact except subnormal products and
 * |q·s| >= 65520, which is an error). FP16 and weight-only modes: out = x (copy; non-finite x is
 * still an error). Integer modes: any K >= 1 and even group (no multiple-of-32 requirement); ATOM:
 * perm device [K] required, validated on the device. out may equal x. Errors (naming `what`, NULL ->
 * "X"; synchronous or deferred as ak_quantize_x_dev): non-finite x [row, col], perm, overflow, CUDA. */
int  ak_fakequant_x_dev(ak_ctx *c, const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                        uint16_t *out, const char *what, char *err);
/* Fake-quant of weights on the device: out device fp16 [N, K] = fp16_rne(aq_fakequant(m, is_weight = 1,
 * w)): WONLY (w4a16-gN) quantizes W with m->w (bits, group, clip); GROUP/ATOM/MIXED as aq_quantize_w
 * (MIXED through its sub-scales); FP16: copy. The engine's fake-quant / w4a16 GPU route. Always
 * synchronous. Errors as ak_fakequant_x_dev (what NULL -> "W"). */
int  ak_fakequant_w_dev(ak_ctx *c, const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm,
                        uint16_t *out, const char *what, char *err);

/* ---- limits of the kernels -------------------------------------------------------------------- */
/* Largest K the kernels take (int32 accumulators hold 256·p exactly on the widened INT8 path, and
 * the quantizer keeps a row in registers/shared memory). LLaMA-2-70B's largest K is 28672. */
#define AK_MAX_K 32768
/* 0 if the GPU kernels implement (mode m, K), else -1 with err saying why. Requirements: integer
 * mode with equal W/X bits of 4 or 8; K % 32 == 0 and 32 <= K <= AK_MAX_K; group sizes (GROUP with
 * g > 0, MIXED, ATOM) multiples of 32 (a group longer than K, or a short last group, is fine);
 * ATOM: outliers % 32 == 0 and K - outliers >= 32. */
int ak_supports(const aq_mode *m, int K, char *err);

/* ---- benchmark primitives (apex4 bench gemm; kernels/ak_bench.cu) ------------------------------ */
/* Device facts for the bench JSON. clocks in MHz, l2 in bytes, driver/runtime as CUDA ints
 * (e.g. 13000). */
typedef struct {
    char   name[128];
    int    sms, cc_major, cc_minor;
    int    sm_clock_mhz, mem_clock_mhz, mem_bus_bits;
    long   l2_bytes;
    double mem_gib;
    int    driver, runtime;
} ak_devinfo;
int ak_device_info(ak_devinfo *d, char *err);

typedef enum {
    AK_IMPL_CUBLAS_FP16 = 0,   /* cublasGemmEx fp16 in/out, fp32 accumulate (CUBLAS_COMPUTE_32F)     */
    AK_IMPL_CUBLAS_INT8 = 1,   /* cublasGemmEx int8 in, int32 out (CUBLAS_COMPUTE_32I), TN layout    */
    AK_IMPL_APEX4       = 2    /* this module's kernel for a mode and path                           */
} ak_impl;

/* Opaque benchmark context (cuBLAS handle, stream, events). Owners in pairs. */
typedef struct ak_bench ak_bench;
int  ak_bench_new(ak_bench **out, char *err);
void ak_bench_free(ak_bench *b);

/* Time Y [M,N] = X [M,K] · W [N,K]^T: `warmup` untimed runs, then `runs` runs each timed with CUDA
 * events; inputs are random (never zeros: codes, scales, sub-scales and fp16 values drawn from a
 * hash on the device) and rotated over enough copies that their total exceeds 3x the L2, so no run
 * finds its inputs in L2. mode/path are used for AK_IMPL_APEX4 only: the plan is the planner's for
 * that path (ak_gemm_plan_ex on device 0); every path including AK_PATH_WGMMA_NOEPI (the overlapped
 * wgmma kernel with the epilogue's conversion and scaling switched off: its time against
 * AK_PATH_WGMMA's shows how much of the epilogue the overlap hides). Writes the median, min and max
 * time in ms. Errors: unsupported shape (ak_supports; cuBLAS INT8 needs K % 4 == 0), a path that
 * does not serve the mode/GPU, out of memory, CUDA/cuBLAS failure. */
int ak_bench_gemm(ak_bench *b, ak_impl impl, const aq_mode *mode, ak_path path, int M, int N, int K,
                  int warmup, int runs, double *ms_median, double *ms_min, double *ms_max, char *err);
/* Time the activation quantizer on X [M,K] (random fp16; ATOM with a random permutation). bytes =
 * bytes read + written (X, codes, scales). */
int ak_bench_quant(ak_bench *b, const aq_mode *mode, int M, int K, int warmup, int runs,
                   double *ms_median, double *bytes, char *err);
/* Time the fused RMSNorm + quantizer (ak_rmsnorm_quantize_x_dev's kernel) on X [M,K] (random fp16,
 * norm weight random in [0.5, 1.5); residual != 0: with the residual add, r [M,K] random, as the
 * engine's x += r; ATOM with a random permutation). bytes = bytes read + written at least once from
 * memory: X read, r read and X written (residual), w [K] read once, codes and scales written.
 * Errors: unsupported mode/shape (ak_supports), out of memory, CUDA failure. */
int ak_bench_rmsnorm_quant(ak_bench *b, const aq_mode *mode, int M, int K, int residual, int warmup, int runs,
                           double *ms_median, double *bytes, char *err);
/* Device-to-device copy bandwidth (GB/s, bytes read + written, 10^9) of a `bytes`-sized cudaMemcpy,
 * median of `runs`. */
int ak_bench_copy(ak_bench *b, size_t bytes, int runs, double *gbs, char *err);

/* ---- bit-exact check against the CPU reference (apex4 check; kernels/ak_check.c) ----------------- */
typedef enum { AK_INPUT_NORMAL = 0, AK_INPUT_HEAVY = 1, AK_INPUT_ADVERSARIAL = 2 } ak_input;
/* Name of an input kind ("normal", "heavy", "adversarial"); ak_input_parse returns -1 if unknown. */
const char *ak_input_name(ak_input k);
int ak_input_parse(const char *s);

/* Fill x [rows, K] fp16 bits with inputs of kind k from seed (deterministic):
 *  normal      N(0, 1) (Box-Muller), rounded to fp16;
 *  heavy       N(0, 1) · exp(1.5 · N(0, 1)) (log-normal magnitudes), every 17th channel x 50
 *              (outlier channels), clipped to ±60000;
 *  adversarial per 32-channel block, cycling by (row + block): exact ties (|v| in {0.5, 1.5, ..., 6.5}
 *              and one 7, so v/s = k + 0.5 with s = 1 for 4-bit, alpha = 1), an all-zero block,
 *              values ~1e-6 (subnormal fp16 scale), values 2^-24 (scale underflows to 0), ±65504
 *              blocks, and normal values (NUMERICS.md "Test vectors").
 * No quantization math here: only inputs. */
void ak_fill_input(ak_input k, unsigned seed, int rows, int K, uint16_t *x);

/* One check case: X [M,K], W [N,K] from (input, seed) (W with seed + 1), ATOM: a random permutation
 * of the K channels from seed + 2. Runs aq_quantize_x/aq_quantize_w/aq_gemm(k_splits, ref_threads)
 * on the CPU, ak_quantize_x and ak_quantize_w_dev on the GPU (compares codes, scales and sub-scales
 * byte for byte) and ak_gemm_ex on
 * the reference's quantized operands for each path in paths_mask (bit 0: AK_PATH_INT8, bit 1:
 * AK_PATH_INT4, bit 2: AK_PATH_WGMMA, bit 3: AK_PATH_WGMMA_SYNC; a wgmma path runs only where it
 * serves the mode and device (ak_gemm_plan_ex), r->paths_run says which ran) with k_splits = 1 and
 * k_splits = max(3, ak_gemm_splits(...)), comparing Y byte for byte with aq_gemm at the same k_splits. Returns 0 when the case ran (r->ok says whether
 * everything matched, r->msg the first difference or "ok"), -1 on an error (err: bad shape,
 * unsupported mode, CUDA failure, out of memory). */
typedef struct {
    int  ok;                 /* 1 if every compared byte matched                             */
    long quant_bytes;        /* bytes of codes + scales compared                             */
    long y_elems;            /* Y elements compared (per path)                               */
    double ref_s, gpu_s;     /* wall seconds: CPU reference (quantize + gemm), GPU calls     */
    int  splits;             /* the k_splits > 1 that was checked next to k_splits = 1        */
    int  paths_run;          /* paths_mask bits whose Y was compared (wgmma: where served)    */
    char msg[256];
} ak_check_result;
int ak_check_case(const aq_mode *m, int M, int N, int K, ak_input input, unsigned seed, int paths_mask,
                  int ref_threads, ak_check_result *r, char *err);

#endif
