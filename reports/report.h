/* report.h — apex4 report: the accuracy/speed Pareto report with the rho speed model (prefix ar_).
 * Reads results files (apex4 eval ppl | zeroshot), bench files (apex4 bench gemm | bench rho) and the
 * GPU table (reports/gpus.json); fits the speed model (reports/speedmodel.h) on the measured points;
 * writes one self-contained HTML page with PLplot SVG plots, a JSON document with every number and a
 * table. Library part of reports/cmd_report.c (tests call the same functions). */
#ifndef APEX4_REPORT_H
#define APEX4_REPORT_H

#include <stdio.h>
#include <cjson/cJSON.h>
#include "speedmodel.h"

#define AR_MAX_FILES 64
#define AR_MAX_MODES 16
#define AR_MAX_MODELS 16
#define AR_FILE_LEN 1024

/* Options of apex4 report (cmd_report.c fills them; NULL/NAN = default). */
typedef struct {
    const char *results_glob;  /* --results: glob(3) pattern(s), comma-separated                     */
    const char *bench_glob;    /* --bench: glob(3) pattern(s), comma-separated                       */
    const char *gpus_path;     /* --gpu-table (default reports/gpus.json)                            */
    const char *gpus;          /* --gpus: "all" (default) or a comma list of table names/aliases     */
    const char *modes;         /* --modes: comma list (default AR_DEFAULT_MODES)                     */
    const char *model;         /* --model: the results model whose accuracy is used (default: the one
                                  with the most modes carrying the budget metric)                    */
    double max_dppl, max_kld;  /* budgets (NAN = not given; neither given -> max_kld = AR_DEFAULT_KLD) */
    int prefill_m, decode_m;   /* 0 -> 2048, 16                                                      */
} ar_opts;
#define AR_DEFAULT_MODES "w4a4-pc,w4a4-g32,w4a4-g64,w4a4-g128,w4a4-g256,w4a4-mixed-g128,atom-g128-o128,w8a8"
#define AR_DEFAULT_KLD 0.1

typedef struct ar_report ar_report;

/* Read and check every input, fit the model, compute speeds, accuracy, fronts and recommendations.
 * Nothing is written. Errors (-1, err names the file or option): a pattern that matches nothing or
 * cannot be read, a results file whose "command" is not "eval ppl"/"eval zeroshot" or whose
 * apex4_version major.minor differs from this build's, a bench file that is neither "bench gemm" nor
 * "bench rho" or lacks a mode asked for (or the cuBLAS FP16 baseline), a device not in the GPU table,
 * an unknown GPU name in --gpus, an unknown mode, a --model not in the results, both budgets. */
int ar_report_build(const ar_opts *o, ar_report **out, char *err);
void ar_report_free(ar_report *r);

/* The JSON document (caller cJSON_Delete's it): gpus [{name, rho, rho_from, figures...}], model
 * {params, fit_rms, ...}, validation {heldout_median_abs_err, heldout_max_abs_err, n_fit, n_heldout,
 * gpu, paper_points [{gpu, mode, measured_lo, measured_hi, predicted, ...}]}, accuracy [...], speed
 * [...], pareto [...], recommendations [{gpu, mode, speedup, measured, decode_mode, ...}], emulation. */
cJSON *ar_report_json(const ar_report *r);

/* The table on f (GPUs with rho and recommendation, validation, paper points). */
void ar_report_print(const ar_report *r, FILE *f);

/* Render the plots (PLplot SVG driver into temporary files, embedded inline) and write the page to
 * path atomically (ax_atomic_open/commit; nothing is left at path on error). -1 with err. */
int ar_report_write_html(const ar_report *r, const char *path, char *err);

/* The held-out median abs error of the last build (for tests and the table). */
double ar_report_heldout_err(const ar_report *r);

#endif
