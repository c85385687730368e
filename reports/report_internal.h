/* report_internal.h — the report's state shared by report.c (data) and report_html.c (page). Not a
 * public interface. */
#ifndef APEX4_REPORT_INTERNAL_H
#define APEX4_REPORT_INTERNAL_H

#include "report.h"

typedef struct { const char *model, *layer; int N, K, count; } ar_layer;   /* count per block */
#define AR_NLAYERS 7
extern const ar_layer ar_layers[AR_NLAYERS];

typedef struct { const char *gpu, *mode; double lo, hi; } ar_paper_point;  /* speedup over FP16 */
#define AR_NPAPER 2
extern const ar_paper_point ar_paper_points[AR_NPAPER];

/* One measured bench gemm file: pts [n] ("fp16" = cuBLAS FP16, else apex4 mode names). */
typedef struct {
    char path[AR_FILE_LEN], device[128];
    int gpu, n;
    ar_point *pts;
} ar_bench;

typedef struct { char mode[32]; double k, t, t16; } ar_emul_pt;   /* times in s */
typedef struct {
    char path[AR_FILE_LEN], device[128];
    int gpu, M, N, K, n;
    ar_emul_pt *p;   /* [n] */
} ar_emul;

#define AR_MAX_ACC 256
typedef struct {
    int model;                              /* index in models */
    char mode[32];
    double ppl, dppl, kld, top1, zs_avg;    /* NAN = missing */
    char ppl_src[AR_FILE_LEN / 4], zs_src[AR_FILE_LEN / 4];
} ar_acc;

typedef struct {
    double sp[2][AR_MAX_MODES][3];   /* [prefill, decode][mode][7B, 70B, both] speedup over FP16 */
    int meas[2][AR_MAX_MODES];       /* 1: from measured bench points (both models' shapes)        */
    int front[2][AR_MAX_MODES];      /* on the Pareto front                                         */
    int rec[2];                      /* recommended mode index, -1 = fp16                           */
} ar_gpu_result;

struct ar_report {
    char gpus_path[AR_FILE_LEN];
    ar_gpus gpus;
    int nsel, sel[AR_MAX_GPUS];                   /* selected GPUs (table indices) */
    int nmodes;
    ar_mode_cost modes[AR_MAX_MODES];
    int nbench;
    ar_bench bench[AR_MAX_FILES];
    ar_emul emul;
    int nresults_files;
    char results_files[AR_MAX_FILES][AR_FILE_LEN];
    int nmodels;
    char models[AR_MAX_MODELS][64];
    int nacc;
    ar_acc acc[AR_MAX_ACC];
    int acc_model, use_dppl, budget_default;
    double budget;
    int prefill_m, decode_m;
    int gpu_fitted[AR_MAX_GPUS];
    ar_params gpu_params[AR_MAX_GPUS];
    double gpu_rms[AR_MAX_GPUS];
    ar_params params, val_params;                 /* reference (first bench file's GPU), validation */
    int ref_gpu, val_nfit, val_nheld;
    double rms, val_median, val_max;
    ar_gpu_result res[AR_MAX_GPUS];
};

double ar_pred_speedup(const ar_report *r, const ar_gpu *g, const ar_mode_cost *c, int M, double xops);
double ar_paper_pred(const ar_report *r, const ar_paper_point *pp);

#endif
