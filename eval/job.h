/* job.h — the one job policy of the evaluation commands (prefix ae_job_): `apex4 eval ppl`
 * (ae_ppl_run_job), `apex4 eval zeroshot` (ae_zs_run) and `apex4 generate` load and check the model
 * and tokenizer, obtain the Atom calibration, build their engines (eval/engine.h) and start their
 * results files through these functions, so the three never differ in how they do it.
 *
 * The policy:
 *  - tokenizer: --tokenizer, else <model>/tokenizer.json; it must fit the model
 *    (ae_model_check_tokenizer: the error names the tokenizer file).
 *  - Atom calibration (NUMERICS.md "Atom-style W4Ax"; Atom §4.1: 128 samples of 2048 tokens):
 *    WikiText-2 validation, windows of min(2048, max_position_embeddings) tokens — a property of
 *    the model, not of an evaluation's --seqlen, so ppl, zero-shot and generate share one cache
 *    file — AE_JOB_CALIB_WINDOWS windows unless --calib-windows says otherwise; cached (eval/calib.c
 *    ae_calib_obtain_on, whose log lines every command prints) in --calib-dir when given, else in the
 *    folder of --out, else in ".". The FP16 calibration forward runs on the evaluation's --device
 *    (eval/engine.h ae_engine_calib_sumsq: the cpu runner's hook, or the cuda engine, resident or
 *    layer-major per layer_major / gpu_mem_limit, on the rank's GPU); a cuda calibration has its own
 *    cache file (fp16 activations may order near-equal channels differently).
 *  - engines: --device cpu|cuda|auto (default auto), --gemm exact|fake (default exact on cuda: the
 *    integer kernels, what gets deployed; fake on cpu: fake-quant + sgemm).
 *  - results files: ax_envelope_new(command) + model, model_dir, model_dtype, tokenizer, device,
 *    backend, gpu (cuda only), gemm, kv4 and calibration (when one was obtained, with the device
 *    that computed it).
 * Owners in pairs: ae_job_open / ae_job_close. Errors: -1 with err (AX_ERR_LEN bytes) naming the
 * option, file or mode. */
#ifndef APEX4_AE_JOB_H
#define APEX4_AE_JOB_H

#include <stdio.h>
#include <cjson/cJSON.h>

#include "ax_util.h"
#include "dist.h"
#include "engine.h"
#include "tokenizer.h"

enum { AE_JOB_CALIB_WINDOWS = 128, AE_JOB_CALIB_SEQLEN = 2048 };

typedef struct {
    const char  *model_dir;     /* checkpoint folder (required, non-empty)                          */
    const char  *tokenizer;     /* tokenizer.json path; NULL = <model_dir>/tokenizer.json            */
    const char  *out;           /* the results file (NULL: none): the calibration cache goes next to it */
    const char  *calib_dir;     /* explicit calibration cache folder (generate --calib-dir); NULL = rule */
    int          calib_windows; /* Atom calibration windows, 0 = AE_JOB_CALIB_WINDOWS                */
    ae_device    device;
    ae_gemm_kind gemm;
    int          kv4;           /* 4-bit KV cache in the evaluated modes                             */
    int          nthreads;      /* cpu threads, 0 = all cores                                        */
    FILE        *log;           /* notices (calibration); NULL = silent                              */
    ae_dist     *dist;          /* ranks (eval/dist.h); NULL = one rank                              */
    int          layer_major;   /* cuda calibration engine: 0 auto, 1 always, -1 never (engine.h)     */
    size_t       gpu_mem_limit; /* cuda calibration engine: bytes it may plan for (0 = 90% of device) */
} ae_job_opts;

/* An open job. Fields are read by the commands; only ae_job_* functions write them. */
typedef struct {
    ae_job_opts   o;                          /* copy of the options (strings borrowed)               */
    ae_model     *model;
    ae_tokenizer *tok;
    char          tokenizer_path[AX_PATH_LEN];
    char          calib_dir[AX_PATH_LEN];     /* where the calibration cache lives (the rule above)  */
    int           calib_seqlen;               /* min(AE_JOB_CALIB_SEQLEN, max_position_embeddings)    */
    int           calib_windows;              /* windows asked for (the split may hold fewer)         */
    ae_calib     *calib;                      /* NULL until ae_job_calibrate found an Atom mode       */
    char          calib_path[AX_PATH_LEN];    /* its cache file                                       */
    ae_device     calib_device;               /* the device whose forward computed it (o.device)      */
    char          backend[160];               /* ae_engine_describe of the first engine built         */
} ae_job;

/* The cache folder rule: calib_dir when given (non-NULL, non-empty), else the folder of out ("/"
 * for "/x", "." for a bare file name), else ".". Writes dir [len]. */
void ae_job_calib_dir(const char *out, const char *calib_dir, char *dir, size_t len);

/* Calibration window length for model m: min(AE_JOB_CALIB_SEQLEN, m->cfg.max_pos). */
int ae_job_calib_seqlen(const ae_model *m);

/* --device / --gemm as every command reads them: device_s NULL = "auto" (ae_device_parse, errors
 * name --device), gemm_s NULL = exact on cuda, fake on cpu (ae_gemm_parse, errors name --gemm). */
int ae_job_parse_device(const char *device_s, const char *gemm_s, ae_device *device, ae_gemm_kind *gemm,
                        char *err);

/* Check the options (model_dir given and non-empty: "--model ..."; tokenizer non-empty and shorter
 * than AX_PATH_LEN: "--tokenizer ..."; calib_windows >= 0; calib_dir, when given, an existing
 * folder: "--calib-dir '<dir>': ..."), load the model (ae_model_load: errors
 * name the folder or file) and the tokenizer (errors name its path) and check that they fit
 * (ae_model_check_tokenizer). *out is owned by the caller (ae_job_close). */
int  ae_job_open(const ae_job_opts *o, ae_job **out, char *err);
void ae_job_close(ae_job *j);

/* Obtain the Atom calibration once (ae_calib_obtain_on with the policy's seqlen, windows and folder,
 * on o.device: cpu with o.nthreads, or cuda on rank 0's GPU (ae_dist_gpu) with o.layer_major and
 * o.gpu_mem_limit) when one of modes [n_modes] is an Atom mode that applies to the model
 * (ae_mode_check); a no-op otherwise or when already obtained. With several ranks (o.dist) every rank calls it: rank 0
 * obtains the calibration (and alone writes the cache file), then broadcasts it, so every rank
 * evaluates with the same bits. Errors: those of ae_calib_obtain (dataset, tokenization,
 * forward), prefixed "calibration for mode <name>: "; a failure on another rank. */
int ae_job_calibrate(ae_job *j, const aq_mode *modes, int n_modes, char *err);

/* An engine for `mode` with the job's device, gemm, kv4 and threads and a KV cache of max_seq
 * positions (Atom modes take j->calib: call ae_job_calibrate first). Records the first engine's
 * ae_engine_describe in j->backend. Errors: those of ae_engine_new, prefixed "mode <name>: ". */
int ae_job_engine_new(ae_job *j, const aq_mode *mode, int max_seq, ae_engine **out, char *err);

/* The results document: ax_envelope_new(command) plus
 *   model (last component of the model folder), model_dir, model_dtype, tokenizer (path): strings;
 *   ranks (number of ranks of the job, 1 without MPI): number;
 *   device ("cpu"/"cuda"), backend (`backend`, or j->backend when NULL or empty, or "cpu (N
 *   threads)" / "cuda" when no engine was built), gpu (= backend, cuda only), gemm ("exact"/"fake"):
 *   strings; kv4: bool;
 *   calibration (only when obtained): {data: str, windows: number (tokens / seqlen), seqlen: number,
 *   tokens: number, cache: str, device: "cpu"/"cuda" (whose forward computed the sums)}.
 * NULL when out of memory. */
cJSON *ae_job_envelope(const ae_job *j, const char *command, const char *backend);

/* Greedy decoding through the engine (what `apex4 generate` runs on either backend): feed prompt
 * [n_prompt] (>= 1) from position 0 (the engine is truncated first) with logits of its last position
 * only, then append argmax tokens (ties to the lowest id, llama2.c sample_argmax) until n_new were
 * produced, a token in stop [n_stop] was produced (not appended) or the engine's max_seq is reached.
 * out [n_new] receives the new tokens, *n_out their count; on_token (may be NULL) gets the sequence
 * so far after each. The same rules as ae_generate (eval/forward.c; llama2.c run.c generate()).
 * Errors: empty prompt, a prompt longer than max_seq, non-finite logits (position named), forward
 * errors. */
int ae_job_generate(ae_engine *e, const int *prompt, int n_prompt, int n_new, const int *stop, int n_stop,
                    int *out, int *n_out, ae_token_cb on_token, void *ctx, char *err);

#endif
