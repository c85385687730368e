/* aq.h — apex4 CPU reference of the W4A4 numerics contract (NUMERICS.md, copied in quant/NUMERICS.md).
 *
 * Prefix aq_ (apex4 quant). Everything here is plain C11 and bit-exact by construction: it is the
 * reference every CUDA kernel (kernels/) is compared against byte for byte.
 *
 * Conventions
 *  - Errors: functions returning int return 0 on success and non-zero on error; they then write a
 *    message into `err` (a caller buffer of AX_ERR_LEN bytes, may be NULL) naming the tensor/argument.
 *  - fp16 values travel as uint16_t bit patterns (IEEE binary16).
 *  - Shapes are written next to every pointer: X [M,K], W [N,K], Y [M,N] row-major.
 */
#ifndef APEX4_AQ_H
#define APEX4_AQ_H

#include <stddef.h>
#include <stdint.h>

#include "ax_base.h"   /* AX_ERR_LEN, APEX4_VERSION (the base layer) */

/* ---- fp16 ------------------------------------------------------------------------------------ */
/* fp32 -> fp16 bits, round to nearest even; overflow gives ±inf, NaN stays NaN (payload quieted).
 * Source: IEEE 754-2008 binary16; NUMERICS.md "Shapes and layouts". */
uint16_t aq_f32_to_f16(float f);
/* fp16 bits -> fp32 (exact). */
float aq_f16_to_f32(uint16_t h);
/* bf16 bits -> fp32 (exact). */
float aq_bf16_to_f32(uint16_t h);
/* Round n fp32 values to fp16 (RNE). Returns 0, or -1 if a value is NaN/inf or overflows fp16 (|v| >
 * 65504 after rounding), with err naming `what` and the flat index. src [n] fp32, dst [n] fp16 bits. */
int aq_f32_to_f16_checked(const float *src, uint16_t *dst, size_t n, const char *what, char *err);

/* ---- modes: one table of rows (STYLE.md "types and modes as data"; LAYOUT.md "modes.c") --------
 * A mode is a row of the static const table in quant/aq_mode.c: one row per format family, with
 * fields per operand (W and X separately: element type, bits, granularity, group, scale kind, clip)
 * and per mode (epilogue, outliers {count, format}, permuted channels, needs calibration, kernel
 * family). aq_mode_parse only finds the row a name belongs to and fills in the parameters of the
 * parametric forms (the group N of every grouped operand or sub-scale, the outlier count O).
 * Everything that quantizes, multiplies or plans reads these fields (an operand's bits, group and
 * clip come from m->w / m->x, so W and X may differ: W4A8, A8W4 and FP8 are new rows). The rows:
 *   name              kind   W                         X                       epilogue outliers
 *   fp16              FP16   F16                       F16                     NONE     -
 *   w4a16-gN          WONLY  INT4 group N, fp16 s      F16                     NONE     -
 *   w8a8              GROUP  INT8 per row, fp16 s      INT8 per row, fp16 s    GROUP    -
 *   w4a4-pc           GROUP  INT4 per row, fp16 s      INT4 per row, fp16 s    GROUP    -
 *   w4a4-gN           GROUP  INT4 group N, fp16 s      INT4 group N, fp16 s    GROUP    -
 *   w4a4-mixed-gN     MIXED  INT4, fp16 S per row x    INT4 per row (token),   MIXED    -
 *                            u4 sub-scales per N       fp16 s
 *   atom-gN-oO        ATOM   INT4 group N, clip 0.85   INT4 group N, clip 0.9  GROUP    O INT8 channels,
 *                                                                                       per row, clip 1;
 *                                                                                       permuted, calib
 * Clip ratios are 1 unless shown. `kind` is the kernel family: only the table (aq_mode.c) and the
 * kernels' traits (kernels/ak_internal.cuh) may switch on it; everything else reads the fields. */
typedef enum {
    AQ_KIND_FP16 = 0,   /* no quantization (fp32 compute on the CPU path)                        */
    AQ_KIND_WONLY,      /* weight-only (w4a16-gN): fake-quant W, X stays float                    */
    AQ_KIND_GROUP,      /* symmetric W and X with the same granularity (per row or group g)       */
    AQ_KIND_MIXED,      /* per-token X, per-channel W scale with 4-bit integer sub-scales (g)     */
    AQ_KIND_ATOM        /* Atom-style: permuted channels, W4A4 g-groups + o INT8 outlier channels */
} aq_kind;

/* Per-operand fields of a mode row. */
typedef enum { AQ_ELEM_F16 = 0, AQ_ELEM_INT4 = 4, AQ_ELEM_INT8 = 8 } aq_elem;  /* stored element type   */
typedef enum {
    AQ_GRAN_NONE = 0,   /* not quantized (float operand)                                          */
    AQ_GRAN_ROW,        /* one scale per row: per-token X / per-channel W (the group is the row)  */
    AQ_GRAN_GROUP       /* one scale per `group` consecutive K channels                           */
} aq_gran;
typedef enum {
    AQ_SCALE_NONE = 0,  /* float operand                                                          */
    AQ_SCALE_F16,       /* fp16 scale per row or group                                            */
    AQ_SCALE_F16_U4SUB  /* fp16 S per row times 4-bit integer sub-scales u per `group` (MIXED W;
                           INT4 codes only: NUMERICS.md "Mixed granularity")                      */
} aq_scale_kind;
typedef struct {
    aq_elem       elem;
    int           bits;   /* 4 or 8; 16 for a float operand                                       */
    aq_gran       gran;
    int           group;  /* group length along K for AQ_GRAN_GROUP and for the sub-scales of
                             AQ_SCALE_F16_U4SUB (gran GROUP then too); 0 otherwise                */
    aq_scale_kind scale;
    float         clip;   /* clip ratio alpha (1 = no clipping; the fp32 constant of the row)     */
} aq_operand;
typedef enum {
    AQ_EPI_NONE = 0,    /* float GEMM (fp16 / weight-only): no integer GEMM                       */
    AQ_EPI_GROUP,       /* per-group fp32 scale FMA of integer partial sums (NUMERICS.md)         */
    AQ_EPI_MIXED        /* exact integer sum with sub-scales, one float scaling per output        */
} aq_epilogue;

/* One mode row (a copy of a table row with its parameters filled in). */
typedef struct {
    char        name[32];   /* canonical name, e.g. "w4a4-g128", "atom-g128-o128"                 */
    aq_kind     kind;       /* kernel family (see above: switched on only by the two tables)      */
    aq_operand  w, x;       /* weight and activation operands (main part)                         */
    aq_epilogue epilogue;
    int         outliers;   /* number o of outlier channels (Atom; 0 otherwise). o = 0: no part   */
    aq_operand  outl;       /* format of the outlier part of both operands when outliers > 0
                               (Atom: INT8, one fp16 scale per row, clip 1); all zero (F16, NONE)
                               in rows without outliers                                          */
    int         permuted;   /* 1: operands are stored in a channel order perm [K] (required by
                               quantize), main part perm[0 .. K-o), outliers perm[K-o .. K)       */
    int         needs_calib;/* 1: needs a calibrated channel order (Atom's outlier reordering)    */
} aq_mode;

/* The standard mode names, NULL-terminated: fp16, w4a16-g128, w8a8, w4a4-pc, w4a4-g32, w4a4-g64,
 * w4a4-g128, w4a4-g256, w4a4-mixed-g128, atom-g128-o128. */
extern const char *const aq_standard_modes[];

/* Parse a mode name. Accepts the standard names and the parametric forms w4a16-gN, w4a4-gN,
 * w4a4-mixed-gN, atom-gN-oO (N >= 2 even, O >= 0). Unknown -> -1 with err listing the valid forms
 * (out untouched). */
int aq_mode_parse(const char *s, aq_mode *out, char *err);
/* 1 if the mode has an integer GEMM (epilogue GROUP or MIXED), 0 for float paths (fp16, w4a16). */
int aq_mode_is_integer(const aq_mode *m);
/* 1 if neither operand is quantized (fp16), 0 otherwise. */
int aq_mode_is_fp16(const aq_mode *m);
/* 1 if a and b have the same row fields (kind, operands, epilogue, outliers, permuted, needs_calib;
 * the name is not compared), else 0. NULL -> 0. */
int aq_mode_same(const aq_mode *a, const aq_mode *b);
/* Group length along K of a quantized part of `cols` channels stored with operand op's layout:
 * op->group for AQ_GRAN_GROUP (also the sub-scale group of AQ_SCALE_F16_U4SUB), cols for
 * AQ_GRAN_ROW, 0 for a float operand. This is aq_qmat.group of the part (it may exceed cols). */
static inline int aq_operand_group(const aq_operand *op, int cols) {
    return op->gran == AQ_GRAN_GROUP ? op->group : op->gran == AQ_GRAN_ROW ? cols : 0;
}

/* ---- symmetric quantizer on one group (NUMERICS.md "Symmetric quantizer") -------------------- */
/* v [L] fp32 finite values (already fp16-representable in the contract's use), bits 4 or 8, clip
 * alpha (1 = none). Writes codes q [L] as int8 values in [qmin,qmax] and returns the fp16 scale bits
 * s = fp16_rne(min(amax·α / qmax, 65504)); s == 0 -> all codes 0. No error cases. */
uint16_t aq_quant_group(const float *v, int L, int bits, float alpha, int8_t *q);

/* ---- int4 packing (NUMERICS.md "Packed int4") ------------------------------------------------- */
/* Pack n codes q [n] int8 in -8..7 into dst [(n+1)/2] bytes: two's complement nibbles, even index in
 * the low nibble; an odd n leaves the last high nibble 0. Values outside -8..7 are an error (-1). */
int aq_pack_int4(const int8_t *q, size_t n, uint8_t *dst);
/* Unpack n codes from src [(n+1)/2] bytes into q [n] int8 (sign-extended nibbles). */
void aq_unpack_int4(const uint8_t *src, size_t n, int8_t *q);

/* ---- quantized matrices ---------------------------------------------------------------------- */
/* One quantized operand [rows, cols]. codes: bits==4 -> packed int4 [rows, (cols+1)/2] (two's
 * complement nibbles, even k in the low nibble); bits==8 -> int8 [rows, cols].
 * scales: fp16 [rows, ngroups]; EXCEPT MIXED weights: scales fp16 [rows] (the per-channel S, one
 * per row) and sub uint8 [rows, ngroups] with u in 1..15 (sub is NULL for every other operand).
 * group is the group length along cols (== cols for per-row); the last group may be short. */
typedef struct {
    int       rows, cols;   /* rows = M (X) or N (W); cols = number of K channels in this part   */
    int       bits;         /* 4 or 8                                                            */
    int       group;        /* group size along cols (== cols for per-row)                       */
    int       ngroups;      /* ceil(cols / group)                                                */
    uint8_t  *codes;        /* see above                                                         */
    uint16_t *scales;       /* (rows, ngroups) fp16; MIXED weights: (rows) fp16 S               */
    uint8_t  *sub;          /* (rows, ngroups) u8 in 1..15, MIXED weights only, else NULL        */
} aq_qmat;

/* A quantized X or W for a mode. For ATOM, `main` holds the K-o permuted non-outlier channels
 * (4-bit, group g) and `outl` the o outlier channels (8-bit, one scale per row, group = o); otherwise
 * (and for ATOM with o = 0, which has no outlier group at all) `outl` has rows == 0 and NULL pointers.
 * Permuted channel i is original channel perm[i]: main column c = perm[c], outlier column c =
 * perm[K - o + c]. GROUP with g = 0 (w8a8, w4a4-pc) and MIXED activations: main.group = K. */
typedef struct {
    aq_mode  mode;
    int      rows, K;
    aq_qmat  main;
    aq_qmat  outl;
    int32_t *perm;          /* ATOM: [K] int32 owned copy of the channel order (freed by
                               aq_qtensor_free); NULL for other modes. Only aq_dequantize reads it. */
} aq_qtensor;

/* Quantize activations X [M,K] fp16 with operand m->x (bits, granularity/group, clip) and, when
 * m->outliers > 0, the outlier format m->outl. perm [K] (permuted modes only, required there, NULL
 * otherwise): new channel order, original indices; its last `outliers` are the outliers.
 * MIXED: X is per-token (gran ROW). Errors: non-integer mode, bad shape, perm missing/not a
 * permutation, a permuted mode with K - o not >= 1. Output is owned by the caller: aq_qtensor_free. */
int aq_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                  aq_qtensor *out, char *err);
/* Quantize weights W [N,K] fp16 with operand m->w (MIXED: scale AQ_SCALE_F16_U4SUB, sub-scales per
 * m->w.group). Same perm and outlier rules. */
int aq_quantize_w(const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm,
                  aq_qtensor *out, char *err);
void aq_qtensor_free(aq_qtensor *t);

/* Integer GEMM Y [M,N] fp16 = X·Wᵀ with the contract's epilogue and accumulation order
 * (NUMERICS.md "Integer GEMM with group scales", "Mixed granularity", "Atom-style").
 * k_splits >= 1: split s covers main groups [s·c, min((s+1)·c, G)) with c = ceil(G / k_splits);
 * per-split fp32 accumulators are combined ((acc_0 + acc_1) + acc_2)…; for ATOM the outlier group
 * belongs to the last split (even when it has no main groups); empty splits add nothing. MIXED: the
 * integer P is exact, so k_splits has no effect. nthreads >= 1 (tiles of rows spread across threads;
 * the result is independent of it). Errors: qx/qw modes, K or layouts differ, non-integer mode,
 * k_splits not in 1..65536, a group too long for an exact int32 dot product (8-bit: > 131071). */
int aq_gemm(const aq_qtensor *qx, const aq_qtensor *qw, int k_splits, uint16_t *y, int nthreads,
            char *err);

/* Dequantize a quantized tensor back to fp32 [rows, K] in the ORIGINAL channel order
 * (float(q)·float(s); MIXED weights: float(q)·(float(S)·u) as the contract's fp32 product).
 * ATOM: uses t->perm (error if it is missing or not a permutation). */
int aq_dequantize(const aq_qtensor *t, float *out, char *err);

/* Fake-quant (quantize -> dequantize in fp32) for simulation, used by the evaluator:
 * src [rows, K] fp32 is first rounded to fp16 (RNE; non-finite or overflow -> error naming `what`),
 * then quantized as X (is_weight = 0) or W (is_weight = 1) for mode m, then dequantized into
 * dst [rows, K] fp32 (original channel order). FP16 mode: exact copy (no fp16 rounding; non-finite
 * values still an error). A float operand (elem F16: both in fp16, X of w4a16) is copied exactly; a
 * quantized operand of a mode without integer GEMM (W of w4a16) is quantized with its fields. perm as
 * above (ATOM only; non-NULL for another mode is an error). dst may equal src (in place).
 * quant/NUMERICS.md "apex4 clarifications" 2. */
int aq_fakequant(const aq_mode *m, int is_weight, const float *src, int rows, int K,
                 const int32_t *perm, float *dst, const char *what, char *err);

/* ---- KV cache 4-bit asymmetric (NUMERICS.md "KV-cache 4-bit") -------------------------------- */
/* In place on x [n] fp32 (one (token, head) vector of head_dim values): quantize and dequantize.
 * Each x is first rounded to fp16 (the cache's storage type). s == 0 (max == min, or a range that
 * underflows fp16) -> x̂ = the fp16-rounded x (= min when max == min). A non-finite x (or one that
 * overflows fp16) leaves the vector unchanged. quant/NUMERICS.md "apex4 clarifications". */
void aq_kv4_fakequant(float *x, int n);

#endif
