/* speedmodel.h — the GPU table (reports/gpus.json) and the rho speed model of apex4 report (prefix ar_).
 *
 * Model (documented for users in the report page and README "apex4 report"): the time of one GEMM
 * Y [M,N] = X [M,K]·W [N,K]^T of a mode on a GPU is
 *     t = t_launch + max(T_comp, T_mem) + T_split
 *     T_tc   = rep·2·M'·N·(K-o) / (P_tc·eta_tc·[eta_tc8 for 8-bit codes]) + 2·M'·N·o / (P_int8·eta_tc·eta_tc8)
 *     T_core = M'·N·[G·(e_core/F + e_cvt/C) + final] / eta_core               (group epilogue, CUDA cores)
 *     T_comp = (T_tc^q + T_core^q)^(1/q) · [mid for the 64 x 128 tile configuration],  q = 1 + overlap
 *     T_mem  = bytes / (BW·eta_mem)
 *     T_split = (S > 1) · (t1 + 2·S·M·N·4 / (BW·eta_mem))       (split-K combine of the tile kernels)
 * M' = M rounded up to 16 (mma tile rows); rep = 128/g for 4-bit groups g < 128 in the M <= 16 kernel
 * (a span is run once per group); t_launch = t0 (M <= 16) or t1 (M > 16); the tile configuration and
 * S follow kernels/ak_plan.cu. The mode row gives the cost features (ar_mode_cost: code bits, groups
 * G = ceil((K-o)/g), epilogue operations per group and output e_core, int->float conversions e_cvt,
 * outliers o, bytes moved), the GPU row the peaks (P_tc = dense INT4 tensor-core peak for 4-bit
 * modes where the GPU has INT4 tensor cores, else INT8; F = FP32 instruction rate = fp32_tflops / 2;
 * C = int->float conversion rate, F/4 when unknown; BW = DRAM bandwidth). FP16 (cuBLAS) is
 * t = t0_f16 + max(2MNK / (P_fp16·eta_f16), bytes16 / (BW·eta_mem)). The ten parameters (ar_params)
 * are fitted on measured bench points by least squares in log(time) (Nelder-Mead on the log
 * parameters, deterministic). Times in seconds. */
#ifndef APEX4_SPEEDMODEL_H
#define APEX4_SPEEDMODEL_H

#include <stddef.h>
#include "aq.h"

#define AR_MAX_GPUS 32
#define AR_NAME_LEN 48

/* One datasheet figure: value (NAN = not published / not applicable) and its source key. */
typedef struct { double v; char src[8]; } ar_fig;

typedef struct {
    char   name[AR_NAME_LEN];          /* table name, e.g. "A100-SXM"                           */
    char   aliases[8][64];             /* device names as CUDA reports them, other spellings    */
    int    naliases;
    char   arch[16], cc[8], note[512];
    ar_fig sms, boost_mhz, l2_mb, dram_gbs, fp32_tflops, tc_fp16_tflops, tc_int8_tops, tc_int4_tops,
           tc_fp8_tflops, i2f_tops;
    double rho;                        /* tc_int4_tops (else tc_int8_tops) / fp32_tflops        */
    int    rho_int4;                   /* 1: rho from INT4, 0: from INT8                         */
} ar_gpu;

typedef struct {
    int    n;
    ar_gpu g[AR_MAX_GPUS];
    int    nsrc;
    char   src_key[64][8];             /* source keys and their texts (for the page)            */
    char   src_text[64][320];
} ar_gpus;

/* Load the GPU table (schema "apex4-gpus", version 1; see reports/gpus.json). Every row needs name,
 * sms, fp32_tflops, tc_fp16_tflops, tc_int8_tops, dram_gbs with a finite positive value; every figure
 * is an object {value (number or null), src (a key of "sources")}. Returns 0 or -1 with err naming the
 * file and the row/field. */
int ar_gpus_load(const char *path, ar_gpus *out, char *err);
/* The row whose name or alias equals s (ASCII case-insensitive), or NULL. */
const ar_gpu *ar_gpus_find(const ar_gpus *t, const char *s);

/* Cost features of a mode row (from aq_mode_parse and its per-operand fields). */
typedef struct {
    char   mode[32];
    int    fp16;        /* 1: the cuBLAS FP16 baseline                                           */
    int    bits;        /* code bits of the main part (4 or 8)                                   */
    int    group;       /* group length along K of the main part (0: one group, per-channel)     */
    int    outliers;    /* o INT8 outlier channels (Atom)                                         */
    int    mixed;       /* integer sub-scale epilogue, one float scaling per output              */
    double e_core;      /* CUDA-core operations per group and output (epilogue)                   */
    double e_cvt;       /* int->float conversions per group and output                           */
} ar_mode_cost;
/* "fp16" or an integer mode name (aq_mode_parse). Epilogue counts of the apex4 kernels (INT8 path,
 * kernels/ak_gemm.cu): 4-bit GROUP 5 (shift, magic int->float add and subtract, scale product, FMA),
 * 8-bit GROUP 2 + 1 conversion, MIXED 2 (shift, integer multiply-add) and per output 2 + 1 conversion,
 * single-group (per-channel) modes 2 per output. xops extra operations are added by the caller
 * (rho emulation). -1 with err for an unknown or float-only mode (w4a16-*). */
int ar_mode_cost_of(const char *mode, ar_mode_cost *out, char *err);

/* Efficiency parameters (all > 0). */
typedef struct {
    double eta_tc;    /* tensor-core efficiency (fraction of the datasheet peak)                   */
    double eta_core;  /* CUDA-core efficiency of the group epilogue                                */
    double eta_mem;   /* DRAM efficiency (fraction of datasheet bandwidth)                         */
    double t0;        /* launch overhead of the M <= 16 kernels (s)                                */
    double eta_f16;   /* cuBLAS FP16 tensor-core efficiency                                        */
    double t0_f16;    /* cuBLAS FP16 launch overhead (s)                                           */
    double eta_tc8;   /* extra tensor-core efficiency factor for 8-bit codes (twice the bytes/MAC) */
    double t1;        /* launch overhead of the tile kernels, M > 16 (s)                           */
    double mid;       /* compute-time factor of the 64 x 128 tile configuration (vs 128 x 128)      */
    double overlap;   /* T_tc and T_core combine as a power mean with exponent 1 + overlap         */
} ar_params;
#define AR_NPARAMS 10

/* Model time (s) of mode c at (M, N, K) on gpu with parameters p, xops extra epilogue operations
 * per group (0 normally). */
double ar_predict(const ar_params *p, const ar_gpu *gpu, const ar_mode_cost *c, int M, int N, int K, double xops);

/* A measured point: mode, shape, median time (s). */
typedef struct { char mode[32]; int M, N, K; double t; char model[24], layer[40]; } ar_point;

/* Fit p on n points (all on `gpu`) by least squares in log time; modes must be known to
 * ar_mode_cost_of. Deterministic. Returns 0 and the RMS of log(pred/meas) in *rms, or -1 with err
 * (n < AR_NPARAMS, unknown mode, non-positive time). */
int ar_fit(const ar_point *pts, int n, const ar_gpu *gpu, ar_params *p, double *rms, char *err);

/* Held-out validation: points sorted by (mode, N, K, M); even positions fit, odd positions held out.
 * Writes the median and max of |pred/meas - 1| over the held-out half and the fitted parameters.
 * nfit/nheld: sizes of the halves. Returns 0 or -1 with err. */
int ar_validate(const ar_point *pts, int n, const ar_gpu *gpu, ar_params *p, double *median_err,
                double *max_err, int *nfit, int *nheld, char *err);

/* rho' of the emulation: rho·(1 + k·c) with c = 1 / (e_core of the mode's per-group epilogue at
 * its CUDA-core cost, conversions counted at F/C operations). */
double ar_emul_c(const ar_gpu *gpu, const ar_mode_cost *c);

#endif
