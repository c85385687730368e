/* job.c — the job policy of the evaluation commands (see job.h). */
#include "job.h"

#include "ak.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "forward.h"
#include "model.h"

#define SETERR(...) ax_seterr(err, __VA_ARGS__)

/* Prefix err with "what: ". */
static void prefix_err(char *err, const char *what) {
    if (!err) return;
    char tail[AX_ERR_LEN];
    snprintf(tail, sizeof tail, "%s", err);
    snprintf(err, AX_ERR_LEN, "%.200s: %.300s", what, tail);
}

void ae_job_calib_dir(const char *out, const char *calib_dir, char *dir, size_t len) {
    if (calib_dir && *calib_dir) { snprintf(dir, len, "%s", calib_dir); return; }
    const char *s = out ? strrchr(out, '/') : NULL;
    if (!s) { snprintf(dir, len, "."); return; }
    size_t n = (size_t)(s - out);
    if (n == 0) n = 1;   /* "/x": the root */
    if (n >= len) n = len - 1;
    memcpy(dir, out, n);
    dir[n] = 0;
}

int ae_job_calib_seqlen(const ae_model *m) {
    return m->cfg.max_pos < AE_JOB_CALIB_SEQLEN ? m->cfg.max_pos : AE_JOB_CALIB_SEQLEN;
}

int ae_job_parse_device(const char *device_s, const char *gemm_s, ae_device *device, ae_gemm_kind *gemm,
                        char *err) {
    if (ae_device_parse(device_s ? device_s : "auto", "--device", device, err)) return -1;
    if (gemm_s) return ae_gemm_parse(gemm_s, "--gemm", gemm, err);
    /* the integer kernels are the GPU default: accuracy of what gets deployed */
    *gemm = *device == AE_DEV_CUDA ? AE_GEMM_EXACT : AE_GEMM_FAKE;
    return 0;
}

void ae_job_close(ae_job *j) {
    if (!j) return;
    ae_calib_free(j->calib);
    ae_tokenizer_free(j->tok);
    ae_model_free(j->model);
    free(j);
}

int ae_job_open(const ae_job_opts *o, ae_job **out, char *err) {
    *out = NULL;
    if (!o->model_dir) { SETERR("--model DIR is required"); return -1; }
    if (!*o->model_dir) { SETERR("--model: empty path"); return -1; }
    if (o->tokenizer && !*o->tokenizer) { SETERR("--tokenizer: empty path"); return -1; }
    if (o->tokenizer && strlen(o->tokenizer) >= AX_PATH_LEN) { SETERR("--tokenizer: path too long"); return -1; }
    if (!o->tokenizer && strlen(o->model_dir) > 4000) { SETERR("--model: path too long"); return -1; }
    if (o->calib_dir && strlen(o->calib_dir) >= AX_PATH_LEN) { SETERR("--calib-dir: path too long"); return -1; }
    if (o->calib_windows < 0) { SETERR("--calib-windows: %d is negative", o->calib_windows); return -1; }
    if (o->calib_dir && *o->calib_dir) {   /* where the cache is written: an existing folder */
        struct stat st;
        if (stat(o->calib_dir, &st) != 0) { SETERR("--calib-dir '%s': %s", o->calib_dir, strerror(errno)); return -1; }
        if (!S_ISDIR(st.st_mode)) { SETERR("--calib-dir '%s': not a folder", o->calib_dir); return -1; }
    }
    if (!o->tokenizer && o->model_dir && !strncmp(o->model_dir, "random:", 7)) {
        SETERR("--model %s is a virtual checkpoint (no folder, no tokenizer.json): give --tokenizer FILE "
               "(e.g. the LLaMA-2 tokenizer of the data root, models/llama2-tokenizer/tokenizer.json)", o->model_dir);
        return -1;
    }
    ae_job *j = calloc(1, sizeof *j);
    if (!j) { SETERR("out of memory"); return -1; }
    j->o = *o;
    if (o->tokenizer) snprintf(j->tokenizer_path, sizeof j->tokenizer_path, "%s", o->tokenizer);
    else snprintf(j->tokenizer_path, sizeof j->tokenizer_path, "%s/tokenizer.json", o->model_dir);
    ae_job_calib_dir(o->out, o->calib_dir, j->calib_dir, sizeof j->calib_dir);
    j->calib_windows = o->calib_windows > 0 ? o->calib_windows : AE_JOB_CALIB_WINDOWS;
    if (ae_model_load(o->model_dir, &j->model, err) ||
        ae_tokenizer_load(j->tokenizer_path, &j->tok, err) ||
        ae_model_check_tokenizer(j->model, j->tok, j->tokenizer_path, err)) {
        ae_job_close(j);
        return -1;
    }
    j->calib_seqlen = ae_job_calib_seqlen(j->model);
    *out = j;
    return 0;
}

/* Rank 0's calibration to every other rank: the token count, the cache path, then every site's
 * channel order and sums (shapes from the model, the same on every rank). */
static int calib_bcast(ae_job *j, char *err) {
    ae_dist *d = j->o.dist;
    const ae_config *cfg = &j->model->cfg;
    const int w[AE_NSITES] = {cfg->dim, cfg->n_heads * cfg->head_dim, cfg->dim, cfg->hidden_dim};
    const int nl = cfg->n_layers;
    if (ae_dist_rank(d) != 0) {   /* the layout ae_calib_free releases (eval/calib.c) */
        ae_calib *c = calloc(1, sizeof *c);
        int ok = c != NULL;
        if (ok) {
            c->n_layers = nl;
            memcpy(c->width, w, sizeof w);
            c->perm = calloc((size_t)nl * AE_NSITES, sizeof *c->perm);
            c->sumsq = calloc((size_t)nl * AE_NSITES, sizeof *c->sumsq);
            ok = c->perm && c->sumsq;
            for (int i = 0; ok && i < nl * AE_NSITES; i++) {
                c->perm[i] = malloc((size_t)w[i % AE_NSITES] * sizeof(int32_t));
                c->sumsq[i] = malloc((size_t)w[i % AE_NSITES] * sizeof(double));
                ok = c->perm[i] && c->sumsq[i];
            }
        }
        if (!ok) {
            SETERR("calibration: out of memory");
            if (c && (!c->perm || !c->sumsq)) c->n_layers = 0;
            ae_calib_free(c);
            c = NULL;
        }
        j->calib = c;
        if (ae_dist_agree(d, !ok, NULL, err)) return -1;
    } else if (ae_dist_agree(d, 0, NULL, err)) {
        return -1;
    }
    int64_t tokens = j->calib->tokens;
    if (ae_dist_bcast(d, 0, &tokens, sizeof tokens, err) ||
        ae_dist_bcast(d, 0, j->calib_path, sizeof j->calib_path, err))
        return -1;
    j->calib->tokens = (long)tokens;
    for (int i = 0; i < nl * AE_NSITES; i++)
        if (ae_dist_bcast(d, 0, j->calib->perm[i], (size_t)w[i % AE_NSITES] * sizeof(int32_t), err) ||
            ae_dist_bcast(d, 0, j->calib->sumsq[i], (size_t)w[i % AE_NSITES] * sizeof(double), err))
            return -1;
    return 0;
}

int ae_job_calibrate(ae_job *j, const aq_mode *modes, int n_modes, char *err) {
    if (j->calib) return 0;
    for (int k = 0; k < n_modes; k++) {
        if (!modes[k].needs_calib || ae_mode_check(j->model, &modes[k], NULL)) continue;
        int rc = 0;
        /* the FP16 forward on the evaluation's device (rank 0's GPU on cuda) */
        ae_calib_where wh;
        memset(&wh, 0, sizeof wh);
        wh.device = j->o.device;
        wh.nthreads = j->o.nthreads;
        wh.gpu = wh.device == AE_DEV_CUDA ? ae_dist_gpu(j->o.dist, ak_device_count()) : 0;
        wh.layer_major = j->o.layer_major;
        wh.gpu_mem_limit = j->o.gpu_mem_limit;
        j->calib_device = wh.device;
        if (ae_dist_rank(j->o.dist) == 0 &&
            ae_calib_obtain_on(j->model, j->tok, j->calib_seqlen, j->calib_windows, j->calib_dir, &wh, j->o.log,
                               &j->calib, j->calib_path, err)) {
            char what[128];
            snprintf(what, sizeof what, "calibration for mode %s", modes[k].name);
            prefix_err(err, what);
            rc = -1;
        }
        if (ae_dist_agree(j->o.dist, rc, NULL, err)) return -1;
        if (ae_dist_size(j->o.dist) > 1 && calib_bcast(j, err)) return -1;
        return 0;
    }
    return 0;
}

int ae_job_engine_new(ae_job *j, const aq_mode *mode, int max_seq, ae_engine **out, char *err) {
    ae_engine_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.device = j->o.device;
    eo.mode = *mode;
    eo.gemm = j->o.gemm;
    eo.kv4 = j->o.kv4;
    eo.nthreads = j->o.nthreads;
    eo.max_seq = max_seq;
    eo.gpu = eo.device == AE_DEV_CUDA ? ae_dist_gpu(j->o.dist, ak_device_count()) : 0;
    if (ae_engine_new(j->model, &eo, mode->needs_calib ? j->calib : NULL, out, err)) {
        char what[128];
        snprintf(what, sizeof what, "mode %s", mode->name);
        prefix_err(err, what);
        return -1;
    }
    if (!j->backend[0]) ae_engine_describe(*out, j->backend, sizeof j->backend);
    return 0;
}

cJSON *ae_job_envelope(const ae_job *j, const char *command, const char *backend) {
    cJSON *doc = ax_envelope_new(command);
    if (!doc) return NULL;
    char name[1024];
    snprintf(name, sizeof name, "%s", j->model->dir);
    size_t n = strlen(name);
    while (n > 1 && name[n - 1] == '/') name[--n] = 0;
    const char *base = strrchr(name, '/');
    base = base && base[1] ? base + 1 : name;
    char be[160];
    if (backend && *backend) snprintf(be, sizeof be, "%s", backend);
    else if (j->backend[0]) snprintf(be, sizeof be, "%s", j->backend);
    else if (j->o.device == AE_DEV_CUDA) snprintf(be, sizeof be, "cuda");
    else snprintf(be, sizeof be, "cpu (%d threads)", j->o.nthreads > 0 ? j->o.nthreads : ae_ncores());
    int ok = cJSON_AddStringToObject(doc, "model", base) != NULL;
    ok = ok && cJSON_AddStringToObject(doc, "model_dir", j->model->dir);
    ok = ok && cJSON_AddStringToObject(doc, "model_dtype", j->model->dtype);
    ok = ok && cJSON_AddStringToObject(doc, "tokenizer", j->tokenizer_path);
    ok = ok && cJSON_AddNumberToObject(doc, "ranks", ae_dist_size(j->o.dist));
    ok = ok && cJSON_AddStringToObject(doc, "device", ae_device_name(j->o.device));
    ok = ok && cJSON_AddStringToObject(doc, "backend", be);
    if (j->o.device == AE_DEV_CUDA) ok = ok && cJSON_AddStringToObject(doc, "gpu", be);
    ok = ok && cJSON_AddStringToObject(doc, "gemm", ae_gemm_name(j->o.gemm));
    ok = ok && cJSON_AddBoolToObject(doc, "kv4", j->o.kv4 != 0);
    if (ok && j->calib) {
        cJSON *c = cJSON_AddObjectToObject(doc, "calibration");
        ok = c != NULL;
        ok = ok && cJSON_AddStringToObject(c, "data", "WikiText-2 validation split (train split not available)");
        ok = ok && cJSON_AddNumberToObject(c, "windows", (double)(j->calib->tokens / j->calib_seqlen));
        ok = ok && cJSON_AddNumberToObject(c, "seqlen", j->calib_seqlen);
        ok = ok && cJSON_AddNumberToObject(c, "tokens", (double)j->calib->tokens);
        ok = ok && cJSON_AddStringToObject(c, "cache", j->calib_path);
        ok = ok && cJSON_AddStringToObject(c, "device", ae_device_name(j->calib_device));
    }
    if (!ok) { cJSON_Delete(doc); return NULL; }
    return doc;
}

int ae_job_generate(ae_engine *e, const int *prompt, int n_prompt, int n_new, const int *stop, int n_stop,
                    int *out, int *n_out, ae_token_cb on_token, void *ctx, char *err) {
    *n_out = 0;
    const int max_seq = ae_engine_opts_of(e)->max_seq;
    if (n_prompt < 1) { SETERR("generate: empty prompt (give at least BOS)"); return -1; }
    if (n_prompt > max_seq) { SETERR("generate: prompt of %d tokens exceeds max_seq %d", n_prompt, max_seq); return -1; }
    const int V = ae_engine_model(e)->cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof(float));
    int *seq = malloc(((size_t)n_prompt + (size_t)(n_new > 0 ? n_new : 0) + 1) * sizeof(int));
    if (!logits || !seq) { free(logits); free(seq); SETERR("out of memory"); return -1; }
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int));
    ae_engine_truncate(e, 0);
    int n = n_prompt, rc = 0;
    /* the prompt in one batch, logits for its last position only */
    if (n_new > 0 && ae_engine_forward(e, seq, n_prompt, 0, n_prompt - 1, logits, err)) rc = -1;
    while (!rc && *n_out < n_new) {
        int best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        if (!isfinite(logits[best])) { SETERR("generate: non-finite logits at position %d", n - 1); rc = -1; break; }
        int is_stop = 0;
        for (int s = 0; s < n_stop; s++) if (stop[s] == best) is_stop = 1;
        if (is_stop) break;
        seq[n++] = best;
        out[(*n_out)++] = best;
        if (on_token) on_token(ctx, seq, n);
        if (*n_out >= n_new || n >= max_seq) break;
        if (ae_engine_forward(e, &seq[n - 1], 1, n - 1, 0, logits, err)) rc = -1;
    }
    free(logits);
    free(seq);
    return rc;
}
