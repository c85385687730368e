/* ak.h — apex4 CUDA kernels, host-side C API (prefix ak_). Implemented in kernels/ak_cuda.cu etc. when the
 * build has CUDA (make CUDA=1, the default when nvcc is found), by kernels/ak_nocuda.c otherwise.
 *
 * The kernels implement NUMERICS.md bit-exactly; they never re-implement the contract on the host:
 * results come back in the CPU reference's layout (quant/aq.h) so they can be compared byte for byte.
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
    AK_PATH_INT8 = 0,   /* int4 codes widened to int8 into mma.sync.m16n8k32.s8 (Hopper and all) */
    AK_PATH_INT4 = 1    /* native mma.sync.m16n8k64.s4 (sm_80/86/89; emulated on sm_90)          */
} ak_path;

/* Activation quantization on the GPU: x [M,K] fp16 bits (host) -> out in aq_quantize_x's layout
 * (host memory; caller frees with aq_qtensor_free), byte-identical to aq_quantize_x (NUMERICS.md
 * "Symmetric quantizer": per token and group, clip alpha_x, fp16 scales; ATOM: permuted channels,
 * 4-bit main groups + INT8 per-token outliers; MIXED: per token). perm [K] int32 as in aq_quantize_x
 * (ATOM only). Errors: unsupported mode/shape (ak_supports), perm missing or not a permutation,
 * non-finite x (message names [row, col]), no device, CUDA failure. */
int ak_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                  aq_qtensor *out, char *err);

/* GEMM on the GPU from host-side quantized operands (aq_quantize_* layout): y [M,N] fp16 (host).
 * Bit-exact with aq_gemm(qx, qw, k_splits = 1, ...) on both paths. Any M, N >= 1; K and groups as in
 * ak_supports. Errors: layouts of qx/qw differ (mode, K, groups, outliers), unsupported shape, CUDA
 * failure (message names the step). */
int ak_gemm(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, uint16_t *y, char *err);
/* The same with split-K over k_splits blocks along K (1..65535); bit-exact with
 * aq_gemm(qx, qw, k_splits, ...): multi-group modes (w4a4-gN, atom) use the contract's split at group
 * boundaries with fp32 partials combined in split order; single-group modes (w4a4-pc, w8a8) and
 * w4a4-mixed split the exact int32 sum, so Y does not depend on k_splits (as in the reference). */
int ak_gemm_ex(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, int k_splits, uint16_t *y,
               char *err);
/* The split count the kernels pick for (mode, M, N, K): > 1 only when the tile grid alone would
 * leave most of the GPU's SMs idle (small M); the benchmark uses it, apex4 check verifies it. */
int ak_gemm_splits(const aq_mode *m, int M, int N, int K);

/* Exhaustive device self-test of the activation quantizer's division-free rounding (ak_quant.cu
 * code_fast) against the contract's CUDA spelling clamp(__float2int_rn(__fdiv_rn(v, s))) for every
 * positive finite fp16 s and every finite fp16 v, 4-bit and 8-bit ranges. pairs = pairs checked,
 * mismatches = how many differ (err names one). -1 on a CUDA failure. */
int ak_selftest_rounding(long long *pairs, long long *mismatches, char *err);

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
 * finds its inputs in L2. mode/path are used for AK_IMPL_APEX4 only. Writes the median, min and max
 * time in ms. Errors: unsupported shape (ak_supports; cuBLAS INT8 needs K % 4 == 0), out of memory,
 * CUDA/cuBLAS failure. */
int ak_bench_gemm(ak_bench *b, ak_impl impl, const aq_mode *mode, ak_path path, int M, int N, int K,
                  int warmup, int runs, double *ms_median, double *ms_min, double *ms_max, char *err);
/* Time the activation quantizer on X [M,K] (random fp16; ATOM with a random permutation). bytes =
 * bytes read + written (X, codes, scales). */
int ak_bench_quant(ak_bench *b, const aq_mode *mode, int M, int K, int warmup, int runs,
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
 * on the CPU, ak_quantize_x on the GPU (compares codes and scales byte for byte) and ak_gemm_ex on
 * the reference's quantized operands for each path in paths_mask (bit 0: AK_PATH_INT8, bit 1:
 * AK_PATH_INT4) with k_splits = 1 and k_splits = max(3, ak_gemm_splits(...)), comparing Y byte for
 * byte with aq_gemm at the same k_splits. Returns 0 when the case ran (r->ok says whether
 * everything matched, r->msg the first difference or "ok"), -1 on an error (err: bad shape,
 * unsupported mode, CUDA failure, out of memory). */
typedef struct {
    int  ok;                 /* 1 if every compared byte matched                             */
    long quant_bytes;        /* bytes of codes + scales compared                             */
    long y_elems;            /* Y elements compared (per path)                               */
    double ref_s, gpu_s;     /* wall seconds: CPU reference (quantize + gemm), GPU calls     */
    int  splits;             /* the k_splits > 1 that was checked next to k_splits = 1        */
    char msg[256];
} ak_check_result;
int ak_check_case(const aq_mode *m, int M, int N, int K, ak_input input, unsigned seed, int paths_mask,
                  int ref_threads, ak_check_result *r, char *err);

#endif
