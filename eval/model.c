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
#include "tokenizer.h"


/* ---- config.json ----------------------------------------------------------------------------- */
/* Limits: generous bounds around every published LLaMA-family config (Llama-3.1-405B: hidden 16384,
 * intermediate 53248, 126 layers, 128 heads, vocab 128256, 131072 positions), so that a typo or a
 * hostile file gives a message instead of an absurd allocation or an int overflow downstream. */
#define CFG_MAX_DIM     65536          /* hidden_size                                   */
#define CFG_MAX_HIDDEN  (1 << 20)      /* intermediate_size                             */
#define CFG_MAX_LAYERS  1024           /* num_hidden_layers                             */
#define CFG_MAX_HEADS   4096           /* num_attention_heads, num_key_value_heads      */
#define CFG_MAX_HEADDIM 4096           /* head_dim                                      */
#define CFG_MAX_VOCAB   (1 << 22)      /* vocab_size                                    */
#define CFG_MAX_POS     (1 << 24)      /* max_position_embeddings                       */

/* What a JSON value is, for messages ("got a string"). */
static const char *json_kind(const cJSON *v) {
    return cJSON_IsString(v) ? "a string" : cJSON_IsNumber(v) ? "a number" : cJSON_IsBool(v) ? "a boolean"
         : cJSON_IsNull(v) ? "null" : cJSON_IsArray(v) ? "an array" : cJSON_IsObject(v) ? "an object" : "nothing";
}
/* "got a string" or "got 64.5" */
static const char *got_of(const cJSON *v, char *buf, size_t len) {
    if (cJSON_IsNumber(v)) {   /* shortest of 15 or 17 digits that reads back exactly */
        snprintf(buf, len, "%.15g", v->valuedouble);
        if (strtod(buf, NULL) != v->valuedouble) snprintf(buf, len, "%.17g", v->valuedouble);
        return buf;
    }
    return json_kind(v);
}

/* An integer field in [lo, hi]. Absent or null: *out = def and returns 0 when !required. `sect`
 * prefixes the key for nested objects ("rope_scaling."). */
static int cfg_int(const cJSON *root, const char *sect, const char *key, int required, int def, int lo, int hi,
                   int *out, const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) { ax_seterr(err, "%s: \"%s%s\" is missing (an integer in [%d, %d])", path, sect, key, lo, hi); return -1; }
        *out = def;
        return 0;
    }
    char got[64];
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        ax_seterr(err, "%s: \"%s%s\" must be an integer in [%d, %d], got %s", path, sect, key, lo, hi,
                  got_of(v, got, sizeof got));
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}
/* A finite number in (lo, hi] that stays finite as a float. */
static int cfg_float(const cJSON *root, const char *sect, const char *key, int required, double def, double lo,
                     double hi, float *out, const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) { ax_seterr(err, "%s: \"%s%s\" is missing (a number in (%g, %g])", path, sect, key, lo, hi); return -1; }
        *out = (float)def;
        return 0;
    }
    char got[64];
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || !(v->valuedouble > lo) || !(v->valuedouble <= hi) ||
        !((float)v->valuedouble > 0)) {
        ax_seterr(err, "%s: \"%s%s\" must be a number in (%g, %g], got %s", path, sect, key, lo, hi,
                  got_of(v, got, sizeof got));
        return -1;
    }
    *out = (float)v->valuedouble;
    return 0;
}
/* A boolean field (absent or null: def). */
static int cfg_bool(const cJSON *root, const char *key, int def, int *out, const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) {
        ax_seterr(err, "%s: \"%s\" must be a boolean, got %s%s", path, key, json_kind(v),
                  cJSON_IsString(v) ? " (write true or false without quotes)" : "");
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 0;
}
/* A string field, NULL when absent or null. */
static int cfg_str(const cJSON *root, const char *sect, const char *key, const char **out, const char *path,
                   char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v)) {
        ax_seterr(err, "%s: \"%s%s\" must be a string, got %s", path, sect, key, json_kind(v));
        return -1;
    }
    *out = v->valuestring;
    return 0;
}
/* bos/eos: an id, a list of ids (the first is used, as Llama-3 configs list several eos; every one
 * is checked), or null. Ids must be integers in [0, 2^22) (HF does not tie them to vocab_size; the
 * forward pass rejects an id outside the vocabulary). */
static int cfg_token(const cJSON *root, const char *key, int *out, const char *path, char *err) {
    const int vocab = CFG_MAX_VOCAB;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = -1;
    if (!v || cJSON_IsNull(v)) return 0;
    const cJSON *first = v, *last = v->next;
    if (cJSON_IsArray(v)) { first = v->child; last = NULL; }
    char got[64];
    for (const cJSON *e = first; e && e != last; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
            e->valuedouble >= vocab) {
            ax_seterr(err, "%s: \"%s\" must be a token id in [0, %d) or a list of them, got %s%s", path, key,
                      vocab, got_of(e, got, sizeof got), cJSON_IsArray(v) ? " in the list" : "");
            return -1;
        }
        if (*out < 0) *out = (int)e->valuedouble;
        if (!cJSON_IsArray(v)) break;
    }
    return 0;
}

static int parse_config(const cJSON *root, ae_config *c, const char *path, char *err) {
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) { ax_seterr(err, "%s: must be a JSON object, got %s", path, json_kind(root)); return -1; }
    const char *mt, *act, *td;
    if (cfg_str(root, "", "model_type", &mt, path, err) || cfg_str(root, "", "hidden_act", &act, path, err) ||
        cfg_str(root, "", "torch_dtype", &td, path, err) || cfg_str(root, "", "dtype", &td, path, err))
        return -1;
    if (mt && strcmp(mt, "llama")) {
        ax_seterr(err, "%s: model_type '%.100s' is not supported (only 'llama', LlamaForCausalLM)", path, mt);
        return -1;
    }
    if (act && strcmp(act, "silu")) {
        ax_seterr(err, "%s: hidden_act '%.100s' is not supported (only 'silu', SwiGLU)", path, act);
        return -1;
    }
    static const char *const bias_keys[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        int b;
        if (cfg_bool(root, bias_keys[i], 0, &b, path, err)) return -1;
        if (b) {
            ax_seterr(err, "%s: \"%s\" = true is not supported (LLaMA linear layers have no bias)", path, bias_keys[i]);
            return -1;
        }
    }
    if (cfg_int(root, "", "hidden_size", 1, 0, 1, CFG_MAX_DIM, &c->dim, path, err) ||
        cfg_int(root, "", "intermediate_size", 1, 0, 1, CFG_MAX_HIDDEN, &c->hidden_dim, path, err) ||
        cfg_int(root, "", "num_hidden_layers", 1, 0, 1, CFG_MAX_LAYERS, &c->n_layers, path, err) ||
        cfg_int(root, "", "num_attention_heads", 1, 0, 1, CFG_MAX_HEADS, &c->n_heads, path, err) ||
        cfg_int(root, "", "num_key_value_heads", 0, c->n_heads, 1, CFG_MAX_HEADS, &c->n_kv_heads, path, err) ||
        cfg_int(root, "", "vocab_size", 1, 0, 1, CFG_MAX_VOCAB, &c->vocab_size, path, err) ||
        cfg_int(root, "", "max_position_embeddings", 0, 2048, 1, CFG_MAX_POS, &c->max_pos, path, err) ||
        cfg_float(root, "", "rms_norm_eps", 0, 1e-6, 0.0, 1.0, &c->rms_eps, path, err))
        return -1;
    if (cfg_int(root, "", "head_dim", 0, 0, 2, CFG_MAX_HEADDIM, &c->head_dim, path, err)) return -1;
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
    if (c->head_dim % 2) {
        ax_seterr(err, "%s: \"head_dim\" %d is odd (RoPE rotates pairs; hidden_size / num_attention_heads when "
                  "absent)", path, c->head_dim);
        return -1;
    }
    /* products the loader and the forward pass form (as size_t, and as int for the attention width) */
    size_t q, p1, p2;
    char what[AX_PATH_LEN + 80];
    snprintf(what, sizeof what, "%.4000s: num_attention_heads * head_dim", path);
    if (ax_mul_size((size_t)c->n_heads, (size_t)c->head_dim, &q, what, err)) return -1;
    if (q > (size_t)CFG_MAX_DIM * 4) {
        ax_seterr(err, "%s: num_attention_heads * head_dim = %zu is larger than %d (4 x the largest hidden_size "
                  "supported)", path, q, CFG_MAX_DIM * 4);
        return -1;
    }
    snprintf(what, sizeof what, "%.4000s: vocab_size * hidden_size * 4 bytes", path);
    if (ax_mul3_size((size_t)c->vocab_size, (size_t)c->dim, sizeof(float), &p1, what, err)) return -1;
    snprintf(what, sizeof what, "%.4000s: intermediate_size * hidden_size * 4 bytes", path);
    if (ax_mul3_size((size_t)c->hidden_dim, (size_t)c->dim, sizeof(float), &p2, what, err)) return -1;

    /* RoPE: classic top-level rope_theta + rope_scaling, or newer rope_parameters {rope_theta,
     * rope_type, ...}. */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rp && cJSON_IsNull(rp)) rp = NULL;
    if (rp && !cJSON_IsObject(rp)) {
        ax_seterr(err, "%s: \"rope_parameters\" must be an object or null, got %s", path, json_kind(rp));
        return -1;
    }
    const double THETA_MAX = 1e12;
    if (rp && cJSON_GetObjectItemCaseSensitive(rp, "rope_theta")) {
        if (cfg_float(rp, "rope_parameters.", "rope_theta", 1, 0, 0.0, THETA_MAX, &c->rope_theta, path, err)) return -1;
    } else if (cfg_float(root, "", "rope_theta", 0, 10000.0, 0.0, THETA_MAX, &c->rope_theta, path, err))
        return -1;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const char *sect = "rope_scaling.";
    if (rs && !cJSON_IsNull(rs) && !cJSON_IsObject(rs)) {
        ax_seterr(err, "%s: \"rope_scaling\" must be an object or null, got %s", path, json_kind(rs));
        return -1;
    }
    if (!rs || cJSON_IsNull(rs)) { rs = rp; sect = "rope_parameters."; }
    if (rs) {
        const char *t = NULL, *t2 = NULL;
        if (cfg_str(rs, sect, "rope_type", &t, path, err) || cfg_str(rs, sect, "type", &t2, path, err)) return -1;
        if (!t) t = t2 ? t2 : "default";
        if (!strcmp(t, "llama3")) {
            c->rope_llama3 = 1;
            if (cfg_float(rs, sect, "factor", 1, 0, 0.0, 1e6, &c->rope_factor, path, err) ||
                cfg_float(rs, sect, "low_freq_factor", 1, 0, 0.0, 1e6, &c->rope_low_freq_factor, path, err) ||
                cfg_float(rs, sect, "high_freq_factor", 1, 0, 0.0, 1e6, &c->rope_high_freq_factor, path, err) ||
                cfg_int(rs, sect, "original_max_position_embeddings", 1, 0, 1, CFG_MAX_POS, &c->rope_orig_max_pos,
                        path, err))
                return -1;
            if (!(c->rope_high_freq_factor > c->rope_low_freq_factor)) {
                ax_seterr(err, "%s: %shigh_freq_factor must exceed low_freq_factor", path, sect);
                return -1;
            }
        } else if (strcmp(t, "default")) {
            ax_seterr(err, "%s: %srope_type '%.100s' is not supported (default, llama3)", path, sect, t);
            return -1;
        }
    }
    if (cfg_bool(root, "tie_word_embeddings", 0, &c->tie_embeddings, path, err)) return -1;  /* HF default: false */
    if (cfg_token(root, "bos_token_id", &c->bos_id, path, err) ||
        cfg_token(root, "eos_token_id", &c->eos_id, path, err))
        return -1;
    return 0;
}

int ae_config_load(const char *path, ae_config *cfg, char *err) {
    memset(cfg, 0, sizeof *cfg);
    if (!path || !*path) { ax_seterr(err, "config.json: empty path"); return -1; }
    char *data = NULL;
    size_t len = 0;
    if (ax_read_file(path, &data, &len, err)) return -1;
    cJSON *root = ax_json_parse_strict(data, len, path, err);
    free(data);
    if (!root) return -1;
    int rc = parse_config(root, cfg, path, err);
    cJSON_Delete(root);
    if (rc) memset(cfg, 0, sizeof *cfg);
    return rc;
}

int ae_model_check_tokenizer(const ae_model *m, const struct ae_tokenizer *tok, const char *tok_path, char *err) {
    int n = ae_tokenizer_vocab_size(tok);
    if (n > m->cfg.vocab_size) {
        ax_seterr(err, "%s: the tokenizer has %d tokens, more than the vocab_size %d of the model %s "
                  "(a tokenizer of another model? give the model's own tokenizer.json)", tok_path, n,
                  m->cfg.vocab_size, m->dir);
        return -1;
    }
    return 0;
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
    ae_st_file  **files; int nfiles;
    char        **fnames;     /* (nfiles) file names as the index writes them                   */
    ae_st_index  *index;      /* model.safetensors.index.json, or NULL                          */
} ckpt_t;

static void ckpt_free(ckpt_t *c) {
    for (int i = 0; i < c->nfiles; i++) { ae_st_close(c->files[i]); free(c->fnames[i]); }
    free(c->files); free(c->fnames);
    ae_st_index_free(c->index);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir + "/" + name into p [AX_PATH_LEN]; -1 with err when it does not fit. */
static int join_path(char *p, const char *dir, const char *name, char *err) {
    int n = snprintf(p, AX_PATH_LEN, "%s/%s", dir, name);
    if (n < 0 || n >= AX_PATH_LEN) {
        ax_seterr(err, "%.200s/%.200s...: path longer than %d bytes", dir, name, AX_PATH_LEN - 1);
        return -1;
    }
    return 0;
}

static int ckpt_open(const char *dir, ckpt_t *c, char *err) {
    char p[AX_PATH_LEN];
    memset(c, 0, sizeof *c);
    if (join_path(p, dir, "model.safetensors", err)) return -1;
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
    if (join_path(p, dir, "model.safetensors.index.json", err)) return -1;
    if (!file_exists(p)) {
        ax_seterr(err, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
        return -1;
    }
    if (ae_st_index_load(p, &c->index, err)) return -1;
    const ae_st_index *x = c->index;
    c->files = calloc((size_t)x->n_files, sizeof *c->files);
    c->fnames = calloc((size_t)x->n_files, sizeof *c->fnames);
    if (!c->files || !c->fnames) { ax_seterr(err, "%s: out of memory", p); return -1; }
    for (int k = 0; k < x->n_files; k++) {
        if (!(c->fnames[k] = strdup(x->files[k]))) { ax_seterr(err, "%s: out of memory", p); return -1; }
        c->nfiles++;
        char sp[AX_PATH_LEN];
        if (join_path(sp, dir, x->files[k], err)) return -1;
        if (ae_st_open(sp, &c->files[k], err)) return -1;
    }
    /* every tensor of every shard must be listed in the weight map, under that shard */
    for (int k = 0; k < c->nfiles; k++)
        for (int i = 0; i < c->files[k]->n; i++) {
            const char *tn = c->files[k]->t[i].name;
            const char *fn = ae_st_index_file(x, tn);
            if (!fn) {
                ax_seterr(err, "%s: tensor '%s' of %s is not listed in the weight_map", p, tn, c->fnames[k]);
                return -1;
            }
            if (strcmp(fn, c->fnames[k])) {
                ax_seterr(err, "%s: tensor '%s' is in %s but the weight_map says %s", p, tn, c->fnames[k], fn);
                return -1;
            }
        }
    return 0;
}

/* Find tensor `name`: returns its file (and *t) or NULL with err naming where it was expected. */
static const ae_st_file *ckpt_find(const ckpt_t *c, const char *name, const ae_st_tensor **t, char *err) {
    if (!c->index) {
        *t = ae_st_find(c->files[0], name);
        if (!*t) { ax_seterr(err, "%s: missing tensor '%s'", c->files[0]->path, name); return NULL; }
        return c->files[0];
    }
    const char *fn = ae_st_index_file(c->index, name);
    if (!fn) {
        ax_seterr(err, "%s: missing tensor '%s' (not in the weight_map)", c->index->path, name);
        return NULL;
    }
    for (int k = 0; k < c->nfiles; k++)
        if (!strcmp(c->fnames[k], fn)) {
            *t = ae_st_find(c->files[k], name);
            if (!*t) {
                ax_seterr(err, "%s: missing tensor '%s' (the weight_map puts it in this file)", c->files[k]->path, name);
                return NULL;
            }
            return c->files[k];
        }
    ax_seterr(err, "%s: internal error: shard %s not open", c->index->path, fn);
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
    if (!m) { ax_seterr(err, "%s: out of memory", dir ? dir : "model"); return -1; }
    /* the folder itself first, so that "--model ''" or a typo does not read as "/config.json" */
    struct stat st;
    if (!dir || !*dir) { ax_seterr(err, "--model: empty path (give the checkpoint folder)"); goto fail; }
    if (strlen(dir) >= sizeof m->dir) {
        ax_seterr(err, "--model '%.200s...': path is %zu bytes, longer than the %zu supported", dir, strlen(dir),
                  sizeof m->dir - 1);
        goto fail;
    }
    if (stat(dir, &st) != 0) {
        ax_seterr(err, "--model '%s': model folder %s (%s)", dir, errno == ENOENT ? "does not exist" : "cannot be read",
                  strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        ax_seterr(err, "--model '%s': not a folder (give the checkpoint folder holding config.json)", dir);
        goto fail;
    }
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    if (join_path(p, dir, "config.json", err)) goto fail;
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
        if (!(wf[i] = ckpt_find(&ck, w->name, &wt[i], err))) {
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
        if ((size_t)t->numel > SIZE_MAX - total) {
            ax_seterr(err, "%s: total weight count overflows size_t", dir);
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
    size_t bytes;
    if (ax_mul_size(total, sizeof(float), &bytes, dir, err)) { free(wf); free(wt); goto fail; }
    if (!(pv->arena = malloc(bytes))) {
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
