/* model.c — config.json parsing and checkpoint loading (see model.h).
 * Sources: HF transformers models/llama/configuration_llama.py (field names and defaults:
 * num_key_value_heads = num_attention_heads, head_dim = hidden_size / num_attention_heads,
 * rms_norm_eps = 1e-6, rope_theta = 10000, max_position_embeddings = 2048,
 * tie_word_embeddings = false), modeling_rope_utils.py (rope_scaling / rope_parameters, "llama3"),
 * modeling_llama.py (tensor names and shapes); transformers' from_pretrained file order
 * (model.safetensors first, then model.safetensors.index.json). */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>
#include "ax_util.h"
#include "safetensors.h"


/* ---- config.json ----------------------------------------------------------------------------- */
/* An integer field in [lo, hi]. Absent or null: *out = def and returns 0 when !required. */
static int cfg_int(const cJSON *root, const char *key, int required, int def, int lo, int hi, int *out,
                   const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) { ax_seterr(err, "%s: field '%s' is missing", path, key); return -1; }
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        ax_seterr(err, "%s: field '%s' must be an integer in [%d, %d]", path, key, lo, hi);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}
static int cfg_float(const cJSON *root, const char *key, int required, double def, double lo, float *out,
                     const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) { ax_seterr(err, "%s: field '%s' is missing", path, key); return -1; }
        *out = (float)def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || !(v->valuedouble > lo) ||
        !isfinite((float)v->valuedouble)) {
        ax_seterr(err, "%s: field '%s' must be a finite number > %g", path, key, lo);
        return -1;
    }
    *out = (float)v->valuedouble;
    return 0;
}
/* bos/eos: an id, a list of ids (the first is used, as Llama-3 configs list several eos), or null. */
static int cfg_token(const cJSON *root, const char *key, int *out, const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = -1;
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsArray(v)) {
        if (!v->child) return 0;
        v = v->child;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 1e9) {
        ax_seterr(err, "%s: field '%s' must be a token id (or a list of them)", path, key);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

static int parse_config(const cJSON *root, ae_config *c, const char *path, char *err) {
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) { ax_seterr(err, "%s: not a JSON object", path); return -1; }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && !cJSON_IsNull(mt) && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "llama"))) {
        ax_seterr(err, "%s: model_type '%s' is not supported (only 'llama', LlamaForCausalLM)", path,
               cJSON_IsString(mt) ? mt->valuestring : "?");
        return -1;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !cJSON_IsNull(act) && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu"))) {
        ax_seterr(err, "%s: hidden_act '%s' is not supported (only 'silu', SwiGLU)", path,
               cJSON_IsString(act) ? act->valuestring : "?");
        return -1;
    }
    static const char *const bias_keys[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, bias_keys[i]))) {
            ax_seterr(err, "%s: %s = true is not supported (LLaMA linear layers have no bias)", path, bias_keys[i]);
            return -1;
        }
    const int BIG = 1 << 24;
    if (cfg_int(root, "hidden_size", 1, 0, 1, BIG, &c->dim, path, err) ||
        cfg_int(root, "intermediate_size", 1, 0, 1, BIG, &c->hidden_dim, path, err) ||
        cfg_int(root, "num_hidden_layers", 1, 0, 1, 4096, &c->n_layers, path, err) ||
        cfg_int(root, "num_attention_heads", 1, 0, 1, 65536, &c->n_heads, path, err) ||
        cfg_int(root, "num_key_value_heads", 0, c->n_heads, 1, 65536, &c->n_kv_heads, path, err) ||
        cfg_int(root, "vocab_size", 1, 0, 1, 1 << 26, &c->vocab_size, path, err) ||
        cfg_int(root, "max_position_embeddings", 0, 2048, 1, 1 << 30, &c->max_pos, path, err) ||
        cfg_float(root, "rms_norm_eps", 0, 1e-6, 0.0, &c->rms_eps, path, err))
        return -1;
    if (cfg_int(root, "head_dim", 0, 0, 1, 65536, &c->head_dim, path, err)) return -1;
    if (!c->head_dim) {
        if (c->dim % c->n_heads) {
            ax_seterr(err, "%s: hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim)",
                   path, c->dim, c->n_heads);
            return -1;
        }
        c->head_dim = c->dim / c->n_heads;
    }
    if (c->n_heads % c->n_kv_heads) {
        ax_seterr(err, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
               c->n_heads, c->n_kv_heads);
        return -1;
    }
    if (c->head_dim % 2) { ax_seterr(err, "%s: head_dim %d is odd (RoPE rotates pairs)", path, c->head_dim); return -1; }
    if ((long long)c->n_heads * c->head_dim > BIG) { ax_seterr(err, "%s: num_attention_heads * head_dim too large", path); return -1; }

    /* RoPE: classic top-level rope_theta + rope_scaling, or newer rope_parameters {rope_theta,
     * rope_type, ...}. */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rp && !cJSON_IsNull(rp) && !cJSON_IsObject(rp)) { ax_seterr(err, "%s: rope_parameters is not an object", path); return -1; }
    if (rp && cJSON_IsObject(rp) && cJSON_GetObjectItemCaseSensitive(rp, "rope_theta")) {
        if (cfg_float(rp, "rope_theta", 1, 0, 0.0, &c->rope_theta, path, err)) return -1;
    } else if (cfg_float(root, "rope_theta", 0, 10000.0, 0.0, &c->rope_theta, path, err))
        return -1;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) rs = (rp && cJSON_IsObject(rp)) ? rp : NULL;
    if (rs) {
        if (!cJSON_IsObject(rs)) { ax_seterr(err, "%s: rope_scaling is not an object or null", path); return -1; }
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
        const char *t = cJSON_IsString(ty) ? ty->valuestring : "default";
        if (!strcmp(t, "llama3")) {
            c->rope_llama3 = 1;
            if (cfg_float(rs, "factor", 1, 0, 0.0, &c->rope_factor, path, err) ||
                cfg_float(rs, "low_freq_factor", 1, 0, 0.0, &c->rope_low_freq_factor, path, err) ||
                cfg_float(rs, "high_freq_factor", 1, 0, 0.0, &c->rope_high_freq_factor, path, err) ||
                cfg_int(rs, "original_max_position_embeddings", 1, 0, 1, 1 << 30, &c->rope_orig_max_pos, path, err))
                return -1;
            if (!(c->rope_high_freq_factor > c->rope_low_freq_factor)) {
                ax_seterr(err, "%s: rope_scaling high_freq_factor must exceed low_freq_factor", path);
                return -1;
            }
        } else if (strcmp(t, "default")) {
            ax_seterr(err, "%s: rope_scaling type '%s' is not supported (default, llama3)", path, t);
            return -1;
        }
    }
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (tie && !cJSON_IsNull(tie) && !cJSON_IsBool(tie)) {
        ax_seterr(err, "%s: tie_word_embeddings must be true or false", path);
        return -1;
    }
    c->tie_embeddings = cJSON_IsTrue(tie);   /* HF LlamaConfig default: false */
    if (cfg_token(root, "bos_token_id", &c->bos_id, path, err) ||
        cfg_token(root, "eos_token_id", &c->eos_id, path, err))
        return -1;
    return 0;
}

int ae_config_load(const char *path, ae_config *cfg, char *err) {
    char *data = NULL;
    size_t len = 0;
    if (ax_read_file(path, &data, &len, err)) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        ax_seterr(err, "%s: not valid JSON (near byte %ld)", path, e ? (long)(e - data) : -1L);
        free(data);
        return -1;
    }
    int rc = parse_config(root, cfg, path, err);
    cJSON_Delete(root);
    free(data);
    return rc;
}

/* ---- checkpoint ------------------------------------------------------------------------------ */
typedef struct {
    float        *arena;      /* all weights, one allocation                                    */
} model_priv;

typedef struct {
    char    name[96];
    float **slot;
    int64_t rows, cols;       /* cols == 0: 1-D tensor of `rows` elements                       */
} want_t;

typedef struct {
    ae_st_file **files; int nfiles;
    char       **fnames;      /* (nfiles) file names as the index writes them                   */
    cJSON       *index;       /* model.safetensors.index.json, or NULL                          */
    const cJSON *wmap;        /* its weight_map                                                  */
} ckpt_t;

static void ckpt_free(ckpt_t *c) {
    for (int i = 0; i < c->nfiles; i++) { ae_st_close(c->files[i]); free(c->fnames[i]); }
    free(c->files); free(c->fnames);
    cJSON_Delete(c->index);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ckpt_open(const char *dir, ckpt_t *c, char *err) {
    char p[AX_PATH_LEN];
    memset(c, 0, sizeof *c);
    snprintf(p, sizeof p, "%.4000s/model.safetensors", dir);
    if (file_exists(p)) {
        c->files = calloc(1, sizeof *c->files);
        c->fnames = calloc(1, sizeof *c->fnames);
        if (!c->files || !c->fnames || !(c->fnames[0] = strdup("model.safetensors"))) {
            ax_seterr(err, "%s: out of memory", p);
            return -1;
        }
        c->nfiles = 1;
        return ae_st_open(p, &c->files[0], err);
    }
    snprintf(p, sizeof p, "%.4000s/model.safetensors.index.json", dir);
    if (!file_exists(p)) {
        ax_seterr(err, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
        return -1;
    }
    char *data = NULL;
    size_t len = 0;
    if (ax_read_file(p, &data, &len, err)) return -1;
    c->index = cJSON_ParseWithLength(data, len);
    free(data);
    if (!c->index) { ax_seterr(err, "%s: not valid JSON", p); return -1; }
    c->wmap = cJSON_GetObjectItemCaseSensitive(c->index, "weight_map");
    if (!cJSON_IsObject(c->wmap) || !c->wmap->child) {
        ax_seterr(err, "%s: no \"weight_map\" object (or it is empty)", p);
        return -1;
    }
    int n = cJSON_GetArraySize(c->wmap);
    c->files = calloc((size_t)n, sizeof *c->files);
    c->fnames = calloc((size_t)n, sizeof *c->fnames);
    if (!c->files || !c->fnames) { ax_seterr(err, "%s: out of memory", p); return -1; }
    for (const cJSON *e = c->wmap->child; e; e = e->next) {
        const char *fn = cJSON_IsString(e) ? e->valuestring : NULL;
        if (!fn || !*fn || strchr(fn, '/') || !strcmp(fn, ".") || !strcmp(fn, "..")) {
            ax_seterr(err, "%s: weight_map entry '%s' is not a file name in the checkpoint folder", p, e->string);
            return -1;
        }
        int k = 0;
        while (k < c->nfiles && strcmp(c->fnames[k], fn)) k++;
        if (k < c->nfiles) continue;
        if (!(c->fnames[k] = strdup(fn))) { ax_seterr(err, "%s: out of memory", p); return -1; }
        c->nfiles++;
        char sp[AX_PATH_LEN];
        snprintf(sp, sizeof sp, "%.4000s/%.90s", dir, fn);
        if (ae_st_open(sp, &c->files[k], err)) return -1;
    }
    /* every tensor of every shard must be listed in the weight map, under that shard */
    for (int k = 0; k < c->nfiles; k++)
        for (int i = 0; i < c->files[k]->n; i++) {
            const char *tn = c->files[k]->t[i].name;
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(c->wmap, tn);
            if (!e) {
                ax_seterr(err, "%s: tensor '%s' of %s is not listed in the weight_map", p, tn, c->fnames[k]);
                return -1;
            }
            if (strcmp(e->valuestring, c->fnames[k])) {
                ax_seterr(err, "%s: tensor '%s' is in %s but the weight_map says %s", p, tn, c->fnames[k],
                       e->valuestring);
                return -1;
            }
        }
    return 0;
}

/* Find tensor `name`: returns its file (and *t) or NULL with err naming where it was expected. */
static const ae_st_file *ckpt_find(const ckpt_t *c, const char *dir, const char *name,
                                   const ae_st_tensor **t, char *err) {
    if (!c->index) {
        *t = ae_st_find(c->files[0], name);
        if (!*t) { ax_seterr(err, "%s: missing tensor '%s'", c->files[0]->path, name); return NULL; }
        return c->files[0];
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(c->wmap, name);
    if (!e) {
        ax_seterr(err, "%s/model.safetensors.index.json: missing tensor '%s' (not in the weight_map)", dir, name);
        return NULL;
    }
    for (int k = 0; k < c->nfiles; k++)
        if (!strcmp(c->fnames[k], e->valuestring)) {
            *t = ae_st_find(c->files[k], name);
            if (!*t) {
                ax_seterr(err, "%s: missing tensor '%s' (the weight_map puts it in this file)", c->files[k]->path, name);
                return NULL;
            }
            return c->files[k];
        }
    ax_seterr(err, "%s: internal error: shard %s not open", dir, e->valuestring);
    return NULL;
}

static int tolerated_extra(const char *name, int tied) {
    size_t n = strlen(name);
    const char *suf = ".rotary_emb.inv_freq";   /* buffers some older checkpoints saved */
    if (n >= strlen(suf) && !strcmp(name + n - strlen(suf), suf)) return 1;
    return tied && !strcmp(name, "lm_head.weight");   /* HF ties it to embed_tokens and ignores it */
}

void ae_model_free(ae_model *m) {
    if (!m) return;
    model_priv *p = m->priv;
    if (p) free(p->arena);
    free(p);
    free(m->w.layers);
    free(m);
}

int ae_model_load(const char *dir, ae_model **out, char *err) {
    *out = NULL;
    char p[AX_PATH_LEN];
    ae_model *m = calloc(1, sizeof *m);
    want_t *want = NULL;
    ckpt_t ck;
    memset(&ck, 0, sizeof ck);
    if (!m) { ax_seterr(err, "%s: out of memory", dir); return -1; }
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    snprintf(p, sizeof p, "%.4000s/config.json", dir);
    if (ae_config_load(p, &m->cfg, err)) goto fail;
    const ae_config *c = &m->cfg;
    if (!(m->priv = calloc(1, sizeof(model_priv)))) goto oom;
    if (!(m->w.layers = calloc((size_t)c->n_layers, sizeof *m->w.layers))) goto oom;
    if (ckpt_open(dir, &ck, err)) goto fail;

    /* the tensors the config implies (modeling_llama.py names) */
    int nw = 0, cap = 3 + 9 * c->n_layers;
    if (!(want = calloc((size_t)cap, sizeof *want))) goto oom;
    const int64_t D = c->dim, H = c->hidden_dim, V = c->vocab_size, Q = (int64_t)c->n_heads * c->head_dim,
                  KV = (int64_t)c->n_kv_heads * c->head_dim;
#define WANT(nm, sl, r, cc) do { snprintf(want[nw].name, sizeof want[nw].name, "%s", nm); \
        want[nw].slot = (sl); want[nw].rows = (r); want[nw].cols = (cc); nw++; } while (0)
    WANT("model.embed_tokens.weight", &m->w.tok_emb, V, D);
    for (int l = 0; l < c->n_layers; l++) {
        ae_layer *L = &m->w.layers[l];
        static const char *const sub[9] = {
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
        float **slots[9] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        const int64_t rows[9] = {D, Q, KV, KV, D, D, H, H, D}, cols[9] = {0, D, D, D, Q, 0, D, D, H};
        for (int s = 0; s < 9; s++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, sub[s]);
            WANT(nm, slots[s], rows[s], cols[s]);
        }
    }
    WANT("model.norm.weight", &m->w.final_norm, D, 0);
    if (!c->tie_embeddings) WANT("lm_head.weight", &m->w.lm_head, V, D);
#undef WANT

    /* locate and check every tensor before allocating */
    const ae_st_file **wf = calloc((size_t)nw, sizeof *wf);
    const ae_st_tensor **wt = calloc((size_t)nw, sizeof *wt);
    if (!wf || !wt) { free(wf); free(wt); goto oom; }
    size_t total = 0;
    int bad = 0;
    for (int i = 0; i < nw && !bad; i++) {
        const want_t *w = &want[i];
        if (!(wf[i] = ckpt_find(&ck, dir, w->name, &wt[i], err))) {
            if (!strcmp(w->name, "lm_head.weight"))
                ax_seterr(err, "%s: missing tensor 'lm_head.weight' and tie_word_embeddings is false in config.json",
                       ck.index ? dir : ck.files[0]->path);
            bad = 1;
            break;
        }
        const ae_st_tensor *t = wt[i];
        int nd = w->cols ? 2 : 1;
        if (t->ndim != nd || t->shape[0] != w->rows || (nd == 2 && t->shape[1] != w->cols)) {
            char got[128] = "", *q = got;
            for (int d = 0; d < t->ndim && q < got + 100; d++)
                q += snprintf(q, (size_t)(got + sizeof got - q), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            if (nd == 2)
                ax_seterr(err, "%s: tensor '%s' has shape [%s], config.json implies [%lld, %lld]", wf[i]->path,
                       w->name, got, (long long)w->rows, (long long)w->cols);
            else
                ax_seterr(err, "%s: tensor '%s' has shape [%s], config.json implies [%lld]", wf[i]->path, w->name,
                       got, (long long)w->rows);
            bad = 1;
            break;
        }
        total += (size_t)t->numel;
    }
    /* anything else in the files means the config and the checkpoint disagree */
    for (int k = 0; k < ck.nfiles && !bad; k++)
        for (int i = 0; i < ck.files[k]->n && !bad; i++) {
            const char *tn = ck.files[k]->t[i].name;
            int known = tolerated_extra(tn, c->tie_embeddings);
            for (int j = 0; j < nw && !known; j++) known = !strcmp(want[j].name, tn);
            if (!known) {
                ax_seterr(err, "%s: unexpected tensor '%s' (config.json: %d layers, no biases%s)", ck.files[k]->path,
                       tn, c->n_layers, c->tie_embeddings ? ", tied embeddings" : "");
                bad = 1;
            }
        }
    if (bad) { free(wf); free(wt); goto fail; }

    model_priv *pv = m->priv;
    if (!(pv->arena = malloc(total * sizeof(float)))) {
        free(wf); free(wt);
        ax_seterr(err, "%s: out of memory for %zu weights", dir, total);
        goto fail;
    }
    size_t off = 0;
    for (int i = 0; i < nw; i++) {
        *want[i].slot = pv->arena + off;
        if (ae_st_read_f32(wf[i], wt[i], pv->arena + off, err)) { free(wf); free(wt); goto fail; }
        off += (size_t)wt[i]->numel;
    }
    snprintf(m->dtype, sizeof m->dtype, "%s", ae_dtype_name(wt[0]->dtype));   /* embed_tokens' dtype */
    if (c->tie_embeddings) m->w.lm_head = m->w.tok_emb;
    free(wf); free(wt);
    free(want);
    ckpt_free(&ck);
    *out = m;
    return 0;
oom:
    ax_seterr(err, "%s: out of memory", dir);
fail:
    free(want);
    ckpt_free(&ck);
    ae_model_free(m);
    return -1;
}
