/* make_model.c — random-weight LLaMA checkpoints in the HF layout (see model.h, ae_make_model).
 * Weights ~ N(0, 0.02²) (HF LlamaConfig initializer_range default), RMSNorm weights = 1 (HF init),
 * written through the safetensors writer (safetensors.h). Every tensor draws from its own stream,
 * seeded by (seed, tensor name), so the values do not depend on the number of shards. */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "ax_util.h"
#include "safetensors.h"
#include "forward.h"   /* ae_parallel_for */


/* splitmix64 (Steele, Lea, Flood 2014): a small, well-mixed generator; one state per tensor. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uniform01(uint64_t *s) {   /* (0, 1]: 53 random bits */
    return ((double)(splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}
/* Samples of N(0, std²) by Box–Muller (both outputs used). splitmix64 is counter-based (the k-th
 * output depends only on seed + k·γ), so pair p (samples 2p, 2p+1) starts from state seed + 2p·γ
 * and chunks of pairs run on all cores with the same values as one sequential pass. */
typedef struct { float *dst; size_t first, n; double std; uint64_t seed; } fill_ctx;

/* pairs [pa, pb) (absolute pair numbers); writes the samples of them inside [first, first+n) */
static void fill_range(void *vc, long pa, long pb, int tid) {
    (void)tid;
    const fill_ctx *c = vc;
    const double two_pi = 6.283185307179586476925286766559;
    size_t p0 = c->first / 2;
    size_t a = p0 + (size_t)pa, b = p0 + (size_t)pb, end = c->first + c->n;
    uint64_t s = c->seed + (uint64_t)a * 2u * 0x9E3779B97F4A7C15ull;
    for (size_t p = a; p < b; p++) {
        double r = sqrt(-2.0 * log(uniform01(&s))), th = two_pi * uniform01(&s);
        size_t i = 2 * p;
        if (i >= c->first && i < end) c->dst[i - c->first] = (float)(c->std * r * cos(th));
        if (i + 1 >= c->first && i + 1 < end) c->dst[i + 1 - c->first] = (float)(c->std * r * sin(th));
    }
}

void ae_gen_normal(uint64_t tensor_seed, double std, size_t first, size_t n, float *dst) {
    if (n == 0) return;
    fill_ctx c = {dst, first, n, std, tensor_seed};
    size_t npairs = (first + n - 1) / 2 - first / 2 + 1;
    ae_parallel_for(0, (long)npairs, 1 << 15, fill_range, &c);
}

/* FNV-1a 64 with offset basis 1469598103934665603: one digit short of the standard
 * 14695981039346656037, as make-model has always written it (kept: changing it would change every
 * checkpoint's values; a device generator must use this constant, model.h). */
static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ull; }
    return h;
}

uint64_t ae_gen_tensor_seed(uint64_t seed, const char *name) { return seed ^ name_hash(name); }

typedef struct {
    char    name[96];
    int     ndim;
    int64_t shape[2];
    int     is_norm;
} mk_tensor;

static int dtype_from_torch(const char *s, ae_dtype *d) {
    if (!strcmp(s, "float16") || !strcmp(s, "f16") || !strcmp(s, "F16") || !strcmp(s, "fp16")) { *d = AE_DT_F16; return 0; }
    if (!strcmp(s, "bfloat16") || !strcmp(s, "bf16") || !strcmp(s, "BF16")) { *d = AE_DT_BF16; return 0; }
    if (!strcmp(s, "float32") || !strcmp(s, "f32") || !strcmp(s, "F32") || !strcmp(s, "fp32")) { *d = AE_DT_F32; return 0; }
    return -1;
}
static const char *torch_name(ae_dtype d) {
    return d == AE_DT_F16 ? "float16" : d == AE_DT_BF16 ? "bfloat16" : "float32";
}

static int mkdir_p(const char *dir, char *err) {
    char p[AX_PATH_LEN];
    snprintf(p, sizeof p, "%s", dir);
    for (char *q = p + 1;; q++) {
        char c = *q;
        if (c == '/' || c == 0) {
            *q = 0;
            if (mkdir(p, 0777) && errno != EEXIST) { ax_seterr(err, "cannot create %s: %s", p, strerror(errno)); return -1; }
            *q = c;
        }
        if (!c) break;
    }
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) { ax_seterr(err, "%s is not a directory", dir); return -1; }
    return 0;
}

int ae_make_model_ex(const char *config_path, uint64_t seed, const char *out_dir, int shards,
                     const char *dtype, char *err) {
    ae_config c;
    if (!out_dir || !*out_dir) { ax_seterr(err, "--out: empty path (give the output folder)"); return -1; }
    if (strlen(out_dir) > 4000) {
        ax_seterr(err, "--out '%.200s...': path is %zu bytes, longer than the 4000 supported", out_dir, strlen(out_dir));
        return -1;
    }
    /* config.json: the input (a file, or a preset name of random:<preset> when no such file
     * exists), with torch_dtype (and the newer `dtype`) set to what is written */
    char *txt = NULL;
    size_t len = 0;
    struct stat cst;
    const char *preset = config_path && stat(config_path, &cst) != 0 ? ae_model_preset_config(config_path) : NULL;
    if (preset) {
        if (!(txt = strdup(preset))) { ax_seterr(err, "out of memory"); return -1; }
        len = strlen(txt);
        if (ae_config_parse(txt, len, config_path, &c, err)) { free(txt); return -1; }
    } else {
        if (ae_config_load(config_path, &c, err)) return -1;
        if (ax_read_file(config_path, &txt, &len, err)) return -1;
    }
    if (shards < 1) { ax_seterr(err, "shards must be >= 1 (got %d)", shards); free(txt); return -1; }
    cJSON *cj = ax_json_parse_strict(txt, len, config_path, err);
    free(txt);
    if (!cj) return -1;
    ae_dtype dt = AE_DT_F16;
    const cJSON *td = cJSON_GetObjectItemCaseSensitive(cj, "torch_dtype");
    if (!cJSON_IsString(td)) td = cJSON_GetObjectItemCaseSensitive(cj, "dtype");
    if (dtype) {
        if (dtype_from_torch(dtype, &dt)) {
            ax_seterr(err, "unknown dtype '%s' (f16, bf16 or f32)", dtype);
            cJSON_Delete(cj);
            return -1;
        }
    } else if (cJSON_IsString(td) && dtype_from_torch(td->valuestring, &dt)) {
        ax_seterr(err, "%s: torch_dtype '%s' is not one of float16, bfloat16, float32", config_path, td->valuestring);
        cJSON_Delete(cj);
        return -1;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(cj, "torch_dtype");
    cJSON_AddStringToObject(cj, "torch_dtype", torch_name(dt));
    if (cJSON_GetObjectItemCaseSensitive(cj, "dtype")) {
        cJSON_DeleteItemFromObjectCaseSensitive(cj, "dtype");
        cJSON_AddStringToObject(cj, "dtype", torch_name(dt));
    }

    /* tensor list in modeling_llama.py order */
    int n = 0, cap = 3 + 9 * c.n_layers;
    mk_tensor *T = calloc((size_t)cap, sizeof *T);
    char **names = calloc((size_t)cap, sizeof *names);
    ae_dtype *dts = calloc((size_t)cap, sizeof *dts);
    int *nd = calloc((size_t)cap, sizeof *nd);
    const int64_t **shp = calloc((size_t)cap, sizeof *shp);
    float *buf = NULL;
    int rc = -1;
    if (!T || !names || !dts || !nd || !shp) { ax_seterr(err, "out of memory"); goto out; }
    const int64_t D = c.dim, H = c.hidden_dim, V = c.vocab_size, Q = (int64_t)c.n_heads * c.head_dim,
                  KV = (int64_t)c.n_kv_heads * c.head_dim;
#define ADD(nm, r, cc, norm) do { snprintf(T[n].name, sizeof T[n].name, "%s", nm); T[n].shape[0] = (r); \
        T[n].shape[1] = (cc); T[n].ndim = (cc) ? 2 : 1; T[n].is_norm = (norm); n++; } while (0)
    ADD("model.embed_tokens.weight", V, D, 0);
    for (int l = 0; l < c.n_layers; l++) {
        static const char *const sub[9] = {
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
        const int64_t rows[9] = {D, Q, KV, KV, D, D, H, H, D}, cols[9] = {0, D, D, D, Q, 0, D, D, H};
        for (int s = 0; s < 9; s++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, sub[s]);
            ADD(nm, rows[s], cols[s], cols[s] == 0);
        }
    }
    ADD("model.norm.weight", D, 0, 1);
    if (!c.tie_embeddings) ADD("lm_head.weight", V, D, 0);
#undef ADD
    if (shards > n) { ax_seterr(err, "shards (%d) exceeds the number of tensors (%d)", shards, n); goto out; }
    size_t maxel = 0;
    uint64_t total_bytes = 0;
    for (int i = 0; i < n; i++) {
        names[i] = T[i].name; dts[i] = dt; nd[i] = T[i].ndim; shp[i] = T[i].shape;
        size_t el, eb;
        if (ax_mul_size((size_t)T[i].shape[0], (size_t)(T[i].ndim == 2 ? T[i].shape[1] : 1), &el, T[i].name, err) ||
            ax_mul_size(el, sizeof(float), &eb, T[i].name, err))
            goto out;
        if (el > maxel) maxel = el;
        total_bytes += el * ae_dtype_size(dt);
    }
    if (!(buf = malloc(maxel * sizeof *buf))) { ax_seterr(err, "out of memory (%zu floats)", maxel); goto out; }
    if (mkdir_p(out_dir, err)) goto out;

    /* shard boundaries: contiguous runs, shard s ends once its cumulative bytes reach
     * (s+1)/shards of the total, leaving at least one tensor for each later shard */
    int start = 0;
    uint64_t cum = 0;
    cJSON *wmap = cJSON_CreateObject();
    if (!wmap) { ax_seterr(err, "out of memory"); goto out; }
    for (int s = 0; s < shards; s++) {
        int end = start;
        uint64_t target = total_bytes / (uint64_t)shards * (uint64_t)(s + 1);
        do {
            cum += (uint64_t)(T[end].shape[0] * (T[end].ndim == 2 ? T[end].shape[1] : 1)) *
                   ae_dtype_size(dt);
            end++;
        } while (end < n - (shards - 1 - s) && (cum < target || s == shards - 1));
        char fname[64], path[AX_PATH_LEN];
        if (shards == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, shards);
        snprintf(path, sizeof path, "%.4000s/%s", out_dir, fname);
        ae_st_writer *w = NULL;
        if (ae_st_write_begin(path, end - start, (const char *const *)names + start, dts + start, nd + start,
                              shp + start, &w, err)) { cJSON_Delete(wmap); goto out; }
        for (int i = start; i < end; i++) {
            size_t el = (size_t)T[i].shape[0] * (size_t)(T[i].ndim == 2 ? T[i].shape[1] : 1);
            if (T[i].is_norm) for (size_t k = 0; k < el; k++) buf[k] = 1.0f;
            else ae_gen_normal(ae_gen_tensor_seed(seed, T[i].name), 0.02, 0, el, buf);
            if (ae_st_write_tensor(w, buf, err)) { ae_st_write_abort(w); cJSON_Delete(wmap); goto out; }
            cJSON_AddStringToObject(wmap, T[i].name, fname);
        }
        if (ae_st_write_end(w, err)) { cJSON_Delete(wmap); goto out; }
        start = end;
    }
    char p[AX_PATH_LEN];
    snprintf(p, sizeof p, "%.4000s/model.safetensors.index.json", out_dir);
    if (shards > 1) {
        cJSON *idx = cJSON_CreateObject();
        cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
        cJSON_AddNumberToObject(meta, "total_size", (double)total_bytes);
        cJSON_AddItemToObject(idx, "weight_map", wmap);
        int r = ax_write_json(p, idx, err);
        cJSON_Delete(idx);
        if (r) goto out;
        snprintf(p, sizeof p, "%.4000s/model.safetensors", out_dir);   /* a stale single file would win */
        unlink(p);
    } else {
        cJSON_Delete(wmap);
        unlink(p);   /* a stale index from an earlier sharded run */
    }
    snprintf(p, sizeof p, "%.4000s/config.json", out_dir);
    if (ax_write_json(p, cj, err)) goto out;
    rc = 0;
out:
    free(buf); free(T); free(names); free(dts); free(nd); free(shp);
    cJSON_Delete(cj);
    return rc;
}

int ae_make_model(const char *config_path, uint64_t seed, const char *out_dir, int shards, char *err) {
    return ae_make_model_ex(config_path, seed, out_dir, shards, NULL, err);
}
