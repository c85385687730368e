/* calib.c — Atom-style calibration (NUMERICS.md "Atom-style W4Ax"; Atom, Zhao et al. 2024, §4.1
 * "mixed-precision / reordering": channels reordered by activation Σx² computed on calibration
 * data, the largest `o` kept in INT8): Σx² per channel of every linear input over calibration
 * windows, the ascending channel order, and a small binary cache file.
 *
 * Cache file (native little-endian, written atomically):
 *   "APX4CAL1" | int32 n_layers | int32 widths[4] | int64 tokens |
 *   per (layer, site): int32 perm[width], float64 sumsq[width] | uint64 FNV-1a of all bytes before.
 * The FP16 forward runs on the evaluation's device through the engine interface
 * (ae_engine_calib_sumsq, eval/engine.h): the cpu runner's per-layer hook (ae_runner_collect, fp32
 * activations) or the cuda engine's device reduction (kernels/ak_calib.h, fp16 activations, resident
 * or layer-major). A cuda calibration has its own cache key and file name. Every command obtains it
 * through eval/job.h. */
#include "forward.h"
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "tokenizer.h"
#include "wikitext.h"

#include <stdarg.h>
#define SETERR(...) ax_seterr(err, __VA_ARGS__)

static const char CALIB_MAGIC[8] = {'A', 'P', 'X', '4', 'C', 'A', 'L', '1'};

static void site_widths(const ae_model *m, int w[AE_NSITES]) {
    w[AE_SITE_ATTN_IN] = m->cfg.dim;
    w[AE_SITE_ATTN_OUT] = m->cfg.n_heads * m->cfg.head_dim;
    w[AE_SITE_MLP_IN] = m->cfg.dim;
    w[AE_SITE_MLP_OUT] = m->cfg.hidden_dim;
}

void ae_calib_free(ae_calib *c) {
    if (!c) return;
    for (int i = 0; i < c->n_layers * AE_NSITES; i++) {
        if (c->perm) free(c->perm[i]);
        if (c->sumsq) free(c->sumsq[i]);
    }
    free(c->perm);
    free(c->sumsq);
    free(c);
}

static ae_calib *calib_alloc(const ae_model *m) {
    ae_calib *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    int nl = m->cfg.n_layers, w[AE_NSITES];
    site_widths(m, w);
    c->n_layers = nl;
    memcpy(c->width, w, sizeof w);
    c->perm = calloc((size_t)nl * AE_NSITES, sizeof *c->perm);
    c->sumsq = calloc((size_t)nl * AE_NSITES, sizeof *c->sumsq);
    if (!c->perm || !c->sumsq) { ae_calib_free(c); return NULL; }
    for (int i = 0; i < nl * AE_NSITES; i++) {
        c->perm[i] = calloc((size_t)w[i % AE_NSITES], sizeof(int32_t));
        c->sumsq[i] = calloc((size_t)w[i % AE_NSITES], sizeof(double));
        if (!c->perm[i] || !c->sumsq[i]) { ae_calib_free(c); return NULL; }
    }
    return c;
}

typedef struct { const double *v; int32_t idx; } sort_item;
static int cmp_item(const void *a, const void *b) {
    const sort_item *x = a, *y = b;
    double vx = x->v[x->idx], vy = y->v[y->idx];
    if (vx < vy) return -1;
    if (vx > vy) return 1;
    return (x->idx > y->idx) - (x->idx < y->idx); /* ties: lower channel first */
}

/* order [n] = channel indices sorted ascending by v (ties by index). */
static int order_of(const double *v, int n, int32_t *order) {
    sort_item *it = malloc((size_t)n * sizeof *it);
    if (!it) return -1;
    for (int k = 0; k < n; k++) it[k] = (sort_item){v, k};
    qsort(it, (size_t)n, sizeof *it, cmp_item);
    for (int k = 0; k < n; k++) order[k] = it[k].idx;
    free(it);
    return 0;
}

int ae_calibrate_on(const ae_model *m, const int *tokens, int n_windows, int seqlen, const ae_calib_where *where,
                    ae_calib **out, char *desc, size_t desc_len, char *err) {
    *out = NULL;
    if (desc && desc_len) desc[0] = 0;
    if (n_windows < 1 || seqlen < 1) {
        SETERR("ae_calibrate: need n_windows >= 1 and seqlen >= 1 (got %d, %d)", n_windows, seqlen);
        return -1;
    }
    ae_calib *c = calib_alloc(m);
    if (!c) { SETERR("out of memory"); return -1; }
    /* the channel order is a property of the FP16 model: an FP16 engine on the asked device */
    ae_engine_opts o;
    memset(&o, 0, sizeof o);
    o.device = where ? where->device : AE_DEV_CPU;
    if (aq_mode_parse("fp16", &o.mode, err)) { ae_calib_free(c); return -1; }
    o.gemm = AE_GEMM_FAKE;
    o.nthreads = where ? where->nthreads : 0;
    o.max_seq = seqlen;
    if (where && where->device == AE_DEV_CUDA) {
        o.gpu = where->gpu;
        o.layer_major = where->layer_major;
        o.gpu_mem_limit = where->gpu_mem_limit;
    }
    ae_engine *e = NULL;
    if (ae_engine_new(m, &o, NULL, &e, err)) { ae_calib_free(c); return -1; }
    if (desc && desc_len) {
        char d[160];
        ae_engine_describe(e, d, sizeof d);
        if (o.device == AE_DEV_CUDA)   /* "cuda (NVIDIA H200, layer-major)"; cpu: "cpu (N threads)" */
            snprintf(desc, desc_len, "cuda (%s%s)", d, ae_engine_layer_major(e) ? ", layer-major" : "");
        else
            snprintf(desc, desc_len, "%s", d);
    }
    int rc = ae_engine_calib_sumsq(e, tokens, n_windows, seqlen, c, err);
    ae_engine_free(e);
    if (rc) { ae_calib_free(c); return -1; }
    int w[AE_NSITES];
    site_widths(m, w);
    for (int i = 0; i < c->n_layers * AE_NSITES; i++)
        if (order_of(c->sumsq[i], w[i % AE_NSITES], c->perm[i])) {
            SETERR("out of memory");
            ae_calib_free(c);
            return -1;
        }
    *out = c;
    return 0;
}

int ae_calibrate(const ae_model *m, const int *tokens, int n_windows, int seqlen, int nthreads,
                 ae_calib **out, char *err) {
    ae_calib_where w;
    memset(&w, 0, sizeof w);
    w.device = AE_DEV_CPU;
    w.nthreads = nthreads;
    return ae_calibrate_on(m, tokens, n_windows, seqlen, &w, out, NULL, 0, err);
}

/* FNV-1a 64 (Fowler–Noll–Vo, http://www.isthe.com/chongo/tech/comp/fnv/). */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}
#define FNV_BASIS 14695981039346656037ULL

int ae_calib_save(const ae_calib *c, const char *path, char *err) {
    char tmp[AX_PATH_LEN];
    FILE *f = ax_atomic_open(path, tmp, err);
    if (!f) return -1;
    uint64_t h = FNV_BASIS;
    int ok = 1;
#define PUT(ptr, size) do { h = fnv1a(h, (ptr), (size)); ok &= fwrite((ptr), 1, (size), f) == (size); } while (0)
    PUT(CALIB_MAGIC, 8);
    int32_t nl = c->n_layers, w[AE_NSITES];
    for (int s = 0; s < AE_NSITES; s++) w[s] = c->width[s];
    int64_t tokens = c->tokens;
    PUT(&nl, sizeof nl);
    PUT(w, sizeof w);
    PUT(&tokens, sizeof tokens);
    for (int i = 0; i < nl * AE_NSITES; i++) {
        size_t n = (size_t)w[i % AE_NSITES];
        PUT(c->perm[i], n * sizeof(int32_t));
        PUT(c->sumsq[i], n * sizeof(double));
    }
#undef PUT
    ok &= fwrite(&h, 1, sizeof h, f) == sizeof h;
    if (!ok) {
        ax_atomic_abort(f, tmp);
        SETERR("%s: write error", path);
        return -1;
    }
    return ax_atomic_commit(f, tmp, path, err);
}

int ae_calib_load(const ae_model *m, const char *path, ae_calib **out, char *err) {
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    if (ax_read_file(path, &buf, &len, err)) return -1;
    int w[AE_NSITES];
    site_widths(m, w);
    int nl = m->cfg.n_layers;
    size_t need = 8 + 4 + 4 * AE_NSITES + 8 + 8;
    for (int i = 0; i < nl * AE_NSITES; i++) need += (size_t)w[i % AE_NSITES] * (4 + 8);
    const char *p = buf;
    int32_t fnl, fw[AE_NSITES];
    int64_t tokens;
    uint64_t h_file, h;
    ae_calib *c = NULL;
    if (len < 8 + 4 + 4 * AE_NSITES + 8 || memcmp(p, CALIB_MAGIC, 8)) {
        SETERR("%s: not an apex4 calibration file (magic APX4CAL1 missing)", path);
        goto fail;
    }
    memcpy(&fnl, p + 8, 4);
    memcpy(fw, p + 12, sizeof fw);
    memcpy(&tokens, p + 12 + sizeof fw, 8);
    if (fnl != nl || memcmp(fw, w, sizeof w)) {
        SETERR("%s: calibration for %d layers with widths %d/%d/%d/%d, model %s has %d layers with "
               "%d/%d/%d/%d", path, fnl, fw[0], fw[1], fw[2], fw[3], m->dir, nl, w[0], w[1], w[2], w[3]);
        goto fail;
    }
    if (len != need) {
        SETERR("%s: %zu bytes, expected %zu (truncated or corrupt)", path, len, need);
        goto fail;
    }
    if (tokens < 1) { SETERR("%s: calibration token count %lld is not positive (corrupt)", path, (long long)tokens); goto fail; }
    memcpy(&h_file, buf + len - 8, 8);
    h = fnv1a(FNV_BASIS, buf, len - 8);
    if (h != h_file) { SETERR("%s: checksum mismatch (corrupt file)", path); goto fail; }
    c = calib_alloc(m);
    if (!c) { SETERR("out of memory"); goto fail; }
    c->tokens = tokens;
    p = buf + 12 + sizeof fw + 8;
    for (int i = 0; i < nl * AE_NSITES; i++) {
        int n = w[i % AE_NSITES];
        memcpy(c->perm[i], p, (size_t)n * 4);
        p += (size_t)n * 4;
        memcpy(c->sumsq[i], p, (size_t)n * 8);
        p += (size_t)n * 8;
        for (int k = 0; k < n; k++)   /* a NaN would make the sort order meaningless */
            if (!isfinite(c->sumsq[i][k]) || c->sumsq[i][k] < 0) {
                SETERR("%s: layer %d site %d channel %d: sum of squares %g is not a finite non-negative number "
                       "(corrupt)", path, i / AE_NSITES, i % AE_NSITES, k, c->sumsq[i][k]);
                goto fail;
            }
        int32_t *chk = malloc((size_t)n * sizeof *chk);
        if (!chk || order_of(c->sumsq[i], n, chk)) { free(chk); SETERR("out of memory"); goto fail; }
        int same = !memcmp(chk, c->perm[i], (size_t)n * 4);
        free(chk);
        if (!same) {
            SETERR("%s: layer %d site %d: stored channel order is not the ascending order of its Σx²",
                   path, i / AE_NSITES, i % AE_NSITES);
            goto fail;
        }
    }
    free(buf);
    *out = c;
    return 0;
fail:
    ae_calib_free(c);
    free(buf);
    return -1;
}

int ae_calib_obtain(const ae_model *m, const struct ae_tokenizer *tok, int seqlen, int n_windows,
                    const char *cache_dir, int nthreads, FILE *log, ae_calib **out, char *path_out,
                    char *err) {
    ae_calib_where w;
    memset(&w, 0, sizeof w);
    w.device = AE_DEV_CPU;
    w.nthreads = nthreads;
    return ae_calib_obtain_on(m, tok, seqlen, n_windows, cache_dir, &w, log, out, path_out, err);
}

int ae_calib_obtain_on(const ae_model *m, const struct ae_tokenizer *tok, int seqlen, int n_windows,
                       const char *cache_dir, const ae_calib_where *where, FILE *log, ae_calib **out,
                       char *path_out, char *err) {
    *out = NULL;
    const int cuda = where && where->device == AE_DEV_CUDA;
    if (log) fprintf(log, "calibration: WikiText-2 validation split (train split not available)\n");
    ad_text txt;
    if (ad_wikitext_load("validation", &txt, err)) return -1;
    int *ids = NULL;
    size_t n = 0;
    if (ae_tokenize(tok, txt.text, txt.len, 1, &ids, &n, err)) { ad_text_free(&txt); return -1; }
    long avail = (long)(n / (size_t)seqlen);
    int nw = n_windows;
    if (avail < nw) {
        if (log) fprintf(log, "calibration: the validation split has only %ld windows of %d tokens; using %ld "
                              "instead of %d\n", avail, seqlen, avail, n_windows);
        nw = (int)avail;
    }
    if (nw < 1) {
        SETERR("calibration: %s gives %zu tokens, less than one window of %d", txt.path, n, seqlen);
        free(ids);
        ad_text_free(&txt);
        return -1;
    }
    /* cache key: format version, dims, dataset digest, the exact calibration tokens, weights; and the
     * device when it is cuda (fp16 activations: near-equal channels may order differently), so a cuda
     * calibration never serves a cpu evaluation or the other way round; the cpu key is unchanged */
    char key[512];
    snprintf(key, sizeof key, "apex4-calib-v1|dataset=%s|seqlen=%d|windows=%d|layers=%d|dim=%d|hidden=%d|heads=%d%s",
             txt.sha256, seqlen, nw, m->cfg.n_layers, m->cfg.dim, m->cfg.hidden_dim, m->cfg.n_heads,
             cuda ? "|device=cuda" : "");
    uint64_t h = fnv1a(FNV_BASIS, key, strlen(key));
    h = fnv1a(h, ids, (size_t)nw * (size_t)seqlen * sizeof(int));
    /* the weights: raw tensor bytes from the mmap, or a virtual model's config + seed (model.h), so
     * a cache never serves another checkpoint that happens to share the folder name */
    uint64_t fp = ae_model_fingerprint(m);
    h = fnv1a(h, &fp, sizeof fp);
    /* model name: last component of the model folder */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", m->dir);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = 0;
    const char *name = strrchr(dir, '/');
    name = name ? name + 1 : dir;
    char path[AX_PATH_LEN];
    const char *cd = cache_dir && *cache_dir ? cache_dir : ".";
    if (strlen(cd) > 3000) {   /* a cut path would write the cache somewhere else */
        SETERR("calibration cache folder '%.200s...' is %zu bytes long, more than the 3000 supported", cd, strlen(cd));
        free(ids);
        ad_text_free(&txt);
        return -1;
    }
    snprintf(path, sizeof path, "%s/calib-%.200s-%s%016llx.bin", cd, name, cuda ? "cuda-" : "", (unsigned long long)h);
    if (path_out) snprintf(path_out, AX_PATH_LEN, "%s", path);
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        char lerr[AX_ERR_LEN];
        if (ae_calib_load(m, path, out, lerr) == 0) {
            if (log) fprintf(log, "calibration: loaded %s (%ld tokens)\n", path, (*out)->tokens);
            free(ids);
            ad_text_free(&txt);
            return 0;
        }
        if (log) fprintf(log, "calibration: ignoring cache: %s; recomputing\n", lerr);
    }
    double t0 = ax_now();
    char desc[200];
    int rc = ae_calibrate_on(m, ids, nw, seqlen, where, out, desc, sizeof desc, err);
    free(ids);
    if (rc) { ad_text_free(&txt); return -1; }
    if (log) fprintf(log, "calibration: %d windows x %d tokens of %s on %s in %.1f s\n", nw, seqlen, txt.path,
                     desc, ax_now() - t0);
    ad_text_free(&txt);
    char serr[AX_ERR_LEN];
    if (ae_calib_save(*out, path, serr)) {
        if (log) fprintf(log, "calibration: could not cache it: %s\n", serr);
    } else if (log) {
        fprintf(log, "calibration: cached in %s\n", path);
    }
    return 0;
}
