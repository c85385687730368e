// ak_internal.cuh — device-side descriptors shared by the kernels/*.cu files (C++ only, not a public
// contract). The public C API is kernels/ak.h.
//
// Device layout (documented in kernels/NOTES.md "Layouts"): the GPU works directly on the CPU
// reference's layout (quant/aq.h aq_qmat), uploaded once with cudaMemcpy:
//   codes   [rows, kb] bytes, kb = cols/2 (packed int4, even k in the low nibble) or cols (int8)
//   scales  [rows, G]  fp16 (MIXED weights: [rows] per-channel S, and sub [rows, G] u8)
// The kernels need kb % 16 == 0 (K % 32 == 0), so every row starts 16-byte aligned (cp.async).
#ifndef APEX4_AK_INTERNAL_CUH
#define APEX4_AK_INTERNAL_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <cstring>
extern "C" {
#include "ak.h"
}

// One K-part of the integer GEMM (ATOM has two: the 4-bit main part, then the 8-bit outliers).
struct ak_gpart {
    const uint8_t *A;      // X codes [M, kb]
    const uint8_t *B;      // W codes [N, kb]
    const __half  *sa;     // GROUP: sx [M, G]; MIXED: sx [M]
    const __half  *sb;     // GROUP: sw [N, G]; MIXED: S [N]
    const uint8_t *u;      // MIXED: sub-scales u [N, G]; else nullptr
    int kb;                // bytes per row of codes (multiple of 16)
    int lda, ldb;          // row pitch in bytes of A and B (>= kb, multiples of 16)
    int bits;              // 4 or 8 (both operands)
    int gch;               // group length in 16-byte chunks (8-bit: even)
    int G;                 // number of groups (last may be short)
};

enum { AK_EPI_GROUP = 0, AK_EPI_MIXED = 1 };

// Small-M tile configuration (M <= 16): 16 x AK_SMALL_BN block tile (4 warps side by side), k-tile
// bytes and pipeline depth; ak_gemm_splits sizes split-K from it (kernels/NOTES.md).
#ifndef AK_SMALL_BN
#define AK_SMALL_BN 256
#endif
#ifndef AK_SMALL_BKB
#define AK_SMALL_BKB 128
#endif
#ifndef AK_SMALL_STAGES
#define AK_SMALL_STAGES 3
#endif

// M <= 16 GEMV-style kernel (ak_gemm.cu gemv_kernel): AK_GEMV = 0 routes M <= 16 back to the
// 16 x AK_SMALL_BN mma tile kernel. A warp owns AK_GEMV_NCOLS output columns; ak_gemm_splits splits K
// until about AK_GEMV_WARPS_PER_SM warps per SM stream weights (best of 6, 12, 24 measured), with
// at least AK_GEMV_MIN_SPANS 64-byte spans per row and split.
#ifndef AK_GEMV
#define AK_GEMV 1
#endif
#define AK_WGMMA AK_WGMMA_AUTO   /* kernels/ak.h */
#define AK_GEMV_NCOLS 16
#ifndef AK_GEMV_U
#define AK_GEMV_U 4     // 64-byte spans per batch of loads (16-byte loads in flight per lane: 4 U)
#endif
#define AK_GEMV_BLOCK_COLS 64   // columns of one gemv_kernel block (4 warps)

// Bytes of a one-shape split-K workspace for (splits, M, N): the [splits, M, N] partials, then one
// counter per AK_GEMV_BLOCK_COLS columns (ak_gemm_args.cnt = ws + ak_ws_part_bytes). Callers zero it
// once at allocation; the combining block resets its counter, so it can be reused by later launches
// of the same shape. (A context keeps its counters apart from the partials: ak_cuda.cu.)
static inline size_t ak_ws_part_bytes(int S, int M, int N) { return (size_t)S * M * N * 4; }
static inline size_t ak_ws_cnt_count(int N) { return (size_t)((N + AK_GEMV_BLOCK_COLS - 1) / AK_GEMV_BLOCK_COLS); }
static inline size_t ak_ws_bytes(int S, int M, int N) { return ak_ws_part_bytes(S, M, N) + ak_ws_cnt_count(N) * 4; }
#ifndef AK_GEMV_WARPS_PER_SM
#define AK_GEMV_WARPS_PER_SM 12
#endif
#ifndef AK_GEMV_MIN_SPANS
#define AK_GEMV_MIN_SPANS 8
#endif

// Split-K (gridDim.z = splits):
//  AK_SPLIT_INT   single-group GROUP modes (w4a4-pc, w8a8) and MIXED: the integer sum P is split
//                 by k-tiles across blocks and the int32 partials are added (exact, order free), so
//                 Y equals the unsplit result for every split count;
//  AK_SPLIT_GROUP multi-group GROUP/ATOM modes: the contract's split (NUMERICS.md, aq_gemm k_splits):
//                 split s takes main groups [s*c, min((s+1)*c, G)), c = ceil(G / splits), the ATOM
//                 outlier group goes to the last split; fp32 partials combined ((a0 + a1) + a2)...
enum { AK_SPLIT_NONE = 0, AK_SPLIT_INT = 1, AK_SPLIT_GROUP = 2 };

struct ak_gemm_args {
    int M, N;
    int nparts;            // 1, or 2 for ATOM with outliers
    int epi;               // AK_EPI_GROUP or AK_EPI_MIXED
    ak_gpart p[2];
    __half *Y;             // [M, N] fp16
    int splits;            // >= 1
    int split_mode;        // AK_SPLIT_*
    void *ws;              // splits > 1: [splits, M, N] int32 (INT) or fp32 (GROUP) partials
    unsigned *cnt;         // splits > 1 with AK_CFG_GEMV: one counter per AK_GEMV_BLOCK_COLS columns,
                           // zero before the launch (zeroed at allocation; the combining block
                           // resets its counter, so they are all zero again after every launch)
    int cfg;               // AK_CFG_* from ak_gemm_plan (kernels/ak_plan.cu)
};

// Tile configurations (ak_plan in ak.h; launch_epi in ak_gemm.cu): GEMV = gemv_kernel (M <= 16),
// SMALL = 16 x AK_SMALL_BN tiles, MID = 64 x 128, BIG = 128 x 128 (the wgmma path: its own 128 x 128).
// AK_WGMMA = AK_WGMMA_AUTO (kernels/ak.h, default 0): 1 lets the planner choose the wgmma path by
// itself; with 0 the wgmma paths run only when asked for by name (check, bench, tests).
enum { AK_CFG_GEMV = 1, AK_CFG_SMALL = 2, AK_CFG_MID = 3, AK_CFG_BIG = 4 };

// The split mode implied by a mode (ak_plan.cu).
int ak_split_mode(const aq_mode *m);

// Launch the GEMM with a.cfg's tile configuration (from ak_gemm_plan). Returns 0 or -1 with err.
// mma.sync paths only (AK_PATH_INT8 / AK_PATH_INT4; kernels/ak_gemm.cu).
int ak_launch_gemm(const ak_gemm_args &a, ak_path path, cudaStream_t st, char *err);
// The wgmma paths (AK_PATH_WGMMA, _SYNC, _NOEPI; kernels/ak_gemm_sm90.cu): one 128 x 128 tile
// configuration (a.cfg ignored), nparts == 1, splits as ak_launch_gemm. 0 or -1 with err (naming
// what the path does not take). Launch only on compute capability 9.x (sm_90a code).
int ak_launch_gemm_sm90(const ak_gemm_args &a, ak_path path, cudaStream_t st, char *err);
// Either of the two by path: what ak_gemm_dev_ex and the benchmark call.
int ak_launch_gemm_path(const ak_gemm_args &a, ak_path path, cudaStream_t st, char *err);
// The wgmma kernel's static group pattern for a group of `group` codes (G groups per row): 1 (g = 32),
// 2 (g = 64), 4 (group ends only at 128-code stage ends: g % 128 == 0, or G == 1); 0 = not served.
int ak_wgmma_group_steps(int group, int G);
static inline bool ak_path_is_wgmma(int p) {
    return p == AK_PATH_WGMMA || p == AK_PATH_WGMMA_SYNC || p == AK_PATH_WGMMA_NOEPI;
}

// One column range of the activation quantizer (ATOM: main then outliers; others: one part).
struct ak_qpart {
    int col0, cols;        // permuted columns [col0, col0 + cols); cols % 32 == 0
    int bits;              // 4 or 8
    int g;                 // group length in elements (multiple of 8 and, here, of 32 or == cols)
    int G;                 // ceil(cols / g)
    float alpha;           // clip ratio
    uint8_t *codes;        // [M, rb] out
    int rb;                // bytes per row: cols/2 or cols
    __half *scales;        // [M, G] out
};

struct ak_quant_args {
    const __half *x;       // [M, K] fp16
    int M, K;
    const int32_t *perm;   // [K] (ATOM) or nullptr
    int nparts;
    ak_qpart p[2];
    unsigned long long *bad;   // device: min flat index of a non-finite x (init ~0ull)
    const unsigned long long *perm_bad;   // ATOM: nullptr, or the perm check's flag: a block does
                                          // nothing if it is not ~0ull (perm not a permutation)
};

int ak_launch_quant(const ak_quant_args &a, cudaStream_t st, char *err);

// ---- context (ak_cuda.cu) ---------------------------------------------------------------------------
// Error-check slots: every checked call takes one slot of AK_SLOT_WORDS u64 device words, all ~0ull
// when clean: [0] min flat index of a non-finite input, [1] an index i with perm[i] out of range or
// repeated, [2] min flat index of an fp16 overflow in an output. The host keeps what each slot's call
// was, to name it when a deferred check reports it.
#define AK_NSLOT 256
#define AK_SLOT_WORDS 4
struct ak_slot_info {
    char op[32], what[96];
    int K;                           // row length of the flat indices
    const uint16_t *x;               // the input (to print a non-finite value in sync mode)
    const int32_t *perm;             // the perm checked (to print the bad entry in sync mode)
    unsigned long long seq;
};
struct ak_ctx {
    ak_ctx_facts f;
    cudaStream_t st;                 // the stream every call uses (own_st, or one set by ak_ctx_set_stream)
    cudaStream_t own_st;             // created by ak_ctx_new, destroyed by ak_ctx_free
    void *ws;                        // split-K partials (grown on demand)
    size_t ws_bytes;
    unsigned *cnt;                   // gemv split counters (grown on demand, zeroed at allocation)
    size_t cnt_n;
    unsigned long long *flags;       // [AK_NSLOT * AK_SLOT_WORDS] device, ~0ull = clean
    int sync_checks;
    unsigned long long seq;          // calls that took a slot so far
    unsigned long long first_pending;// seq of the oldest unchecked slot
    ak_slot_info info[AK_NSLOT];
};
// Make c's device current. 0 or -1 with err.
int ak_ctx_use(ak_ctx *c, const char *op, char *err);
// Take a check slot for one call (op, tensor what, row length K); -1 on error (a deferred failure
// found while recycling slots is reported here). Device words: c->flags + slot * AK_SLOT_WORDS.
int ak_slot_open(ak_ctx *c, const char *op, const char *what, int K, const uint16_t *x, const int32_t *perm,
                 char *err);
// Finish the call: in sync mode (or force) wait and report this slot; else leave it for ak_ctx_check.
int ak_slot_close(ak_ctx *c, int slot, bool force_sync, char *err);
// The activation quantizer's call set-up, shared by ak_quantize_x_dev and ak_rmsnorm_quantize_x_dev
// (ak_cuda.cu): mode and K supported (ak_supports), perm given iff the mode permutes, out in the
// mode's activation layout (with perm storage for permuted modes) and >= M rows; *a = the launch
// arguments (a->x = x); a check slot opened (slot_x: the input whose bits name a non-finite value,
// NULL: named by [row, col] only); ATOM: perm checked on the device and copied into out. Returns
// the slot, or -1 with err (op: the public call's name, what: the tensor's).
int ak_quant_begin(ak_ctx *c, const char *op, const char *what, const aq_mode *m, const uint16_t *x,
                   const uint16_t *slot_x, int M, int K, const int32_t *perm, ak_dqt *out, ak_quant_args *a,
                   char *err);
// The fused RMSNorm + quantizer launch on prepared arguments (ak_quant.cu; a.x unused): x [M, K] fp16
// read (and, with r, x += r written back), w [K] fp16; 16-byte aligned x, r, w. 0 or -1 with err.
int ak_launch_rmsnorm_quant(const ak_quant_args &a, uint16_t *x, const uint16_t *r, const uint16_t *w, float eps,
                            cudaStream_t st, char *err);

// ---- general quantizer (ak_wquant.cu) ---------------------------------------------------------------
// Validate perm [K] on the device: flag[0] = an offending index (else stays ~0ull). K <= AK_PERM_MAX_K.
#define AK_PERM_MAX_K 393216
int ak_launch_perm_check(const int32_t *perm, int K, unsigned long long *flag, cudaStream_t st, char *err);

// ---- the kernels' traits of a mode row (shared by ak_cuda.cu, ak_wquant.cu, ak_plan.cu, ak_bench.cu) ---
// Everything here reads the row's fields (quant/aq.h aq_mode: operands w / x, epilogue, outliers,
// outl, permuted); kernels/ never switches on the mode kind.
//
// The parts of a quantized tensor for (mode, X/W, K), as quant/aq_quant.c quantize_f32 lays them out:
// main part K - o channels in the operand's format; outlier part o channels in m->outl's format.
struct qlayout {
    int nparts;
    int cols[2], bits[2], group[2];
    bool sub;          // per-row S + sub-scales u (AQ_SCALE_F16_U4SUB: MIXED weights)
};

static inline qlayout layout_of(const aq_mode *m, bool is_w, int K) {
    qlayout L;
    memset(&L, 0, sizeof L);
    const aq_operand *op = is_w ? &m->w : &m->x;
    L.nparts = 1;
    L.cols[0] = K - m->outliers;
    L.bits[0] = op->bits;
    L.group[0] = aq_operand_group(op, L.cols[0]);
    L.sub = op->scale == AQ_SCALE_F16_U4SUB;
    if (m->outliers > 0) {
        L.nparts = 2;
        L.cols[1] = m->outliers;
        L.bits[1] = m->outl.bits;
        L.group[1] = aq_operand_group(&m->outl, m->outliers);
    }
    return L;
}

// The GEMM epilogue of an integer mode (AK_EPI_GROUP or AK_EPI_MIXED).
static inline int ak_epi_of(const aq_mode *m) { return m->epilogue == AQ_EPI_MIXED ? AK_EPI_MIXED : AK_EPI_GROUP; }

static inline size_t dq_row_bytes(const ak_dqmat *q) { return q->bits == 4 ? (size_t)(q->cols + 1) / 2 : (size_t)q->cols; }

#define AK_CUDA_TRY(call, what)                                                                  \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            if (err) snprintf(err, AX_ERR_LEN, "%s: %s (%s)", what, cudaGetErrorString(e_),      \
                              #call);                                                            \
            goto fail;                                                                           \
        }                                                                                        \
    } while (0)

#endif
