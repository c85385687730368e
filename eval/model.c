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
#include "forward.h"       /* ae_parallel_for */
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
    cJSON *root = ax_json_read_file(path, err);
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
/* One entry per tensor the config implies, in modeling_llama.py order: [0] embed_tokens,
 * [1] norm, [2] lm_head (a copy of [0] when tied), then 9 per layer (AE_T_ATTN_NORM .. AE_T_DOWN). */
typedef struct {
    char                name[96];
    size_t              rows, cols;   /* norms: 1 x dim                                            */
    const ae_st_file   *f;            /* file-backed: the file holding it (NULL for virtual)       */
    const ae_st_tensor *t;
    uint64_t            seed;         /* virtual: per-tensor seed (ae_gen_tensor_seed)             */
    int                 is_norm;      /* virtual: constant 1                                       */
} tref;

typedef struct {
    ae_st_file  **files; int nfiles;
    char        **fnames;     /* (nfiles) file names as the index writes them                   */
    ae_st_index  *index;      /* model.safetensors.index.json, or NULL                          */
} ckpt_t;

typedef struct {
    ckpt_t    ck;         /* open, memory-mapped files (file-backed)                               */
    int       virt;       /* 1: "random:" spec                                                     */
    uint64_t  seed;       /* virtual: the model seed                                               */
    char     *cfg_text;   /* virtual: the config.json text (fingerprint)                           */
    int       n;          /* 3 + 9 * n_layers                                                      */
    tref     *t;          /* (n)                                                                   */
} model_priv;

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


/* ---- presets of `random:<preset>` -------------------------------------------------------------- */
/* config.json of the Hugging Face checkpoints (fields apex4 reads; the rest of those files —
 * initializer_range 0.02, pretraining_tp, use_cache — changes nothing here). */
static const struct { const char *name, *json; } presets[] = {
    {"llama2-7b",   /* meta-llama/Llama-2-7b-hf */
     "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_act\":\"silu\","
     "\"hidden_size\":4096,\"intermediate_size\":11008,\"num_hidden_layers\":32,\"num_attention_heads\":32,"
     "\"num_key_value_heads\":32,\"vocab_size\":32000,\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-05,"
     "\"rope_theta\":10000.0,\"rope_scaling\":null,\"tie_word_embeddings\":false,\"torch_dtype\":\"float16\","
     "\"bos_token_id\":1,\"eos_token_id\":2}"},
    {"llama2-13b",  /* meta-llama/Llama-2-13b-hf */
     "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_act\":\"silu\","
     "\"hidden_size\":5120,\"intermediate_size\":13824,\"num_hidden_layers\":40,\"num_attention_heads\":40,"
     "\"num_key_value_heads\":40,\"vocab_size\":32000,\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-05,"
     "\"rope_theta\":10000.0,\"rope_scaling\":null,\"tie_word_embeddings\":false,\"torch_dtype\":\"float16\","
     "\"bos_token_id\":1,\"eos_token_id\":2}"},
    {"llama2-70b",  /* meta-llama/Llama-2-70b-hf */
     "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_act\":\"silu\","
     "\"hidden_size\":8192,\"intermediate_size\":28672,\"num_hidden_layers\":80,\"num_attention_heads\":64,"
     "\"num_key_value_heads\":8,\"vocab_size\":32000,\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-05,"
     "\"rope_theta\":10000.0,\"rope_scaling\":null,\"tie_word_embeddings\":false,\"torch_dtype\":\"float16\","
     "\"bos_token_id\":1,\"eos_token_id\":2}"},
    {"llama3-8b",   /* meta-llama/Meta-Llama-3-8B (no rope_scaling; torch_dtype bfloat16 there, the
                     * virtual model is fp16 regardless) */
     "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_act\":\"silu\","
     "\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,\"num_attention_heads\":32,"
     "\"num_key_value_heads\":8,\"vocab_size\":128256,\"max_position_embeddings\":8192,\"rms_norm_eps\":1e-05,"
     "\"rope_theta\":500000.0,\"rope_scaling\":null,\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\","
     "\"bos_token_id\":128000,\"eos_token_id\":128001}"},
    {"tiny",        /* tests: 2 layers, 64 wide, GQA 4 heads over 2, vocab 512 (stories260K's tokenizer) */
     "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_act\":\"silu\","
     "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
     "\"num_key_value_heads\":2,\"vocab_size\":512,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-05,"
     "\"rope_theta\":10000.0,\"tie_word_embeddings\":false,\"torch_dtype\":\"float16\","
     "\"bos_token_id\":1,\"eos_token_id\":2}"},
};

const char *ae_model_preset_config(const char *name) {
    for (size_t i = 0; name && i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, name)) return presets[i].json;
    return NULL;
}
const char *ae_model_preset_names(void) { return "llama2-7b, llama2-13b, llama2-70b, llama3-8b, tiny"; }

/* ---- the tensor table ------------------------------------------------------------------------ */
static const char *const layer_sub[9] = {
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

/* Names and shapes of every tensor the config implies (p->t [3 + 9 n_layers]). */
static int table_init(const ae_config *c, model_priv *p, const char *what, char *err) {
    p->n = 3 + 9 * c->n_layers;
    if (!(p->t = calloc((size_t)p->n, sizeof *p->t))) { ax_seterr(err, "%s: out of memory", what); return -1; }
    const size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, V = (size_t)c->vocab_size,
                 Q = (size_t)c->n_heads * (size_t)c->head_dim, KV = (size_t)c->n_kv_heads * (size_t)c->head_dim;
#define SET(i, nm, r, cc, norm) do { snprintf(p->t[i].name, sizeof p->t[i].name, "%s", nm); \
        p->t[i].rows = (r); p->t[i].cols = (cc); p->t[i].is_norm = (norm); } while (0)
    SET(0, "model.embed_tokens.weight", V, D, 0);
    SET(1, "model.norm.weight", 1, D, 1);
    SET(2, "lm_head.weight", V, D, 0);
    const size_t rows[9] = {1, Q, KV, KV, D, 1, H, H, D}, cols[9] = {D, D, D, D, Q, D, D, D, H};
    for (int l = 0; l < c->n_layers; l++)
        for (int s = 0; s < 9; s++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, layer_sub[s]);
            SET(3 + 9 * l + s, nm, rows[s], cols[s], s == 0 || s == 5);
        }
#undef SET
    return 0;
}

void ae_model_free(ae_model *m) {
    if (!m) return;
    model_priv *p = m->priv;
    if (p) {
        ckpt_free(&p->ck);
        free(p->t);
        free(p->cfg_text);
    }
    free(p);
    free(m);
}

/* The table entry of (layer, id), or NULL with err. */
static const tref *ref_of(const ae_model *m, int layer, ae_tensor_id id, char *err) {
    const model_priv *p = m->priv;
    if ((int)id < 0 || id >= AE_T_COUNT) {
        ax_seterr(err, "%s: tensor id %d is not one of the %d ae_tensor_id values", m->dir, (int)id, AE_T_COUNT);
        return NULL;
    }
    if (id <= AE_T_LM_HEAD) {
        if (layer != -1) {
            ax_seterr(err, "%s: tensor id %d is a global tensor (layer -1), got layer %d", m->dir, (int)id, layer);
            return NULL;
        }
        return &p->t[id];
    }
    if (layer < 0 || layer >= m->cfg.n_layers) {
        ax_seterr(err, "%s: layer %d of tensor id %d is outside [0, %d)", m->dir, layer, (int)id, m->cfg.n_layers);
        return NULL;
    }
    return &p->t[3 + 9 * layer + (id - AE_T_ATTN_NORM)];
}

/* ---- virtual checkpoints ("random:") --------------------------------------------------------- */
int ae_config_parse(const char *text, size_t len, const char *what, ae_config *cfg, char *err) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = ax_json_parse_strict(text, len, what, err);
    if (!root) return -1;
    int rc = parse_config(root, cfg, what, err);
    cJSON_Delete(root);
    if (rc) memset(cfg, 0, sizeof *cfg);
    return rc;
}
static int config_from_text(const char *text, size_t len, const char *what, ae_config *cfg, char *err) {
    return ae_config_parse(text, len, what, cfg, err);
}

static int load_virtual(const char *spec, ae_model *m, model_priv *p, char *err) {
    const char *body = spec + 7;   /* after "random:" */
    const char *comma = strchr(body, ',');
    size_t wl = comma ? (size_t)(comma - body) : strlen(body);
    char e2[AX_ERR_LEN];
    if (wl == 0) {
        ax_seterr(err, "--model '%.300s': give a preset (%s) or a config.json path after 'random:'", spec,
                  ae_model_preset_names());
        return -1;
    }
    char what[AX_PATH_LEN];
    if (wl >= sizeof what - 16) {
        ax_seterr(err, "--model '%.200s...': the config path is longer than %zu bytes", spec, sizeof what - 17);
        return -1;
    }
    memcpy(what, body, wl);
    what[wl] = 0;
    /* key=value options */
    uint64_t seed = AE_MODEL_DEFAULT_SEED;
    int have_seed = 0;
    for (const char *q = comma; q; ) {
        const char *kv = q + 1, *next = strchr(kv, ',');
        size_t kl = next ? (size_t)(next - kv) : strlen(kv);
        char opt[128];
        if (kl >= sizeof opt) {
            ax_seterr(err, "--model '%.300s': option '%.40s...' is too long (only seed=S)", spec, kv);
            return -1;
        }
        memcpy(opt, kv, kl);
        opt[kl] = 0;
        if (!strncmp(opt, "seed=", 5)) {
            if (have_seed) { ax_seterr(err, "--model '%.300s': seed= given twice", spec); return -1; }
            if (ax_parse_u64(opt + 5, "seed=", &seed, e2)) {
                ax_seterr(err, "--model '%.300s': %s", spec, e2);
                return -1;
            }
            have_seed = 1;
        } else {
            ax_seterr(err, "--model '%.300s': unknown option '%s' (random:<preset or config.json>[,seed=S])", spec,
                      opt);
            return -1;
        }
        q = next;
    }
    const char *preset = ae_model_preset_config(what);
    size_t len = 0;
    if (preset) {
        len = strlen(preset);
        if (!(p->cfg_text = strdup(preset))) { ax_seterr(err, "--model '%.300s': out of memory", spec); return -1; }
        char nm[128];
        snprintf(nm, sizeof nm, "preset %.60s", what);
        if (config_from_text(p->cfg_text, len, nm, &m->cfg, e2)) {
            ax_seterr(err, "--model '%.300s': %s", spec, e2);
            return -1;
        }
    } else {
        struct stat st;
        if (stat(what, &st) == 0 && S_ISDIR(st.st_mode)) strcat(what, "/config.json");   /* a checkpoint folder */
        if (stat(what, &st) != 0 || !S_ISREG(st.st_mode)) {
            ax_seterr(err, "--model '%.300s': '%.300s' is neither a preset (%s) nor a config.json file", spec, what,
                      ae_model_preset_names());
            return -1;
        }
        if (ax_read_file(what, &p->cfg_text, &len, e2) || config_from_text(p->cfg_text, len, what, &m->cfg, e2)) {
            ax_seterr(err, "--model '%.300s': %s", spec, e2);
            return -1;
        }
    }
    p->virt = 1;
    p->seed = seed;
    if (table_init(&m->cfg, p, spec, err)) return -1;
    for (int i = 0; i < p->n; i++) p->t[i].seed = ae_gen_tensor_seed(seed, p->t[i].name);
    if (m->cfg.tie_embeddings) p->t[AE_T_LM_HEAD] = p->t[AE_T_EMB];
    snprintf(m->dtype, sizeof m->dtype, "F16");
    return 0;
}

int ae_model_load(const char *dir, ae_model **out, char *err) {
    *out = NULL;
    char p[AX_PATH_LEN];
    ae_model *m = calloc(1, sizeof *m);
    model_priv *pv = NULL;
    if (!m) { ax_seterr(err, "%s: out of memory", dir ? dir : "model"); return -1; }
    /* the folder itself first, so that "--model ''" or a typo does not read as "/config.json" */
    struct stat st;
    if (!dir || !*dir) { ax_seterr(err, "--model: empty path (give the checkpoint folder)"); goto fail; }
    if (strlen(dir) >= sizeof m->dir) {
        ax_seterr(err, "--model '%.200s...': path is %zu bytes, longer than the %zu supported", dir, strlen(dir),
                  sizeof m->dir - 1);
        goto fail;
    }
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    if (!(m->priv = pv = calloc(1, sizeof *pv))) goto oom;
    if (!strncmp(dir, "random:", 7)) {
        if (load_virtual(dir, m, pv, err)) goto fail;
        *out = m;
        return 0;
    }
    if (stat(dir, &st) != 0) {
        ax_seterr(err, "--model '%s': model folder %s (%s)", dir, errno == ENOENT ? "does not exist" : "cannot be read",
                  strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        ax_seterr(err, "--model '%s': not a folder (give the checkpoint folder holding config.json, or "
                  "random:<preset or config.json>)", dir);
        goto fail;
    }
    if (join_path(p, dir, "config.json", err)) goto fail;
    if (ae_config_load(p, &m->cfg, err)) goto fail;
    const ae_config *c = &m->cfg;
    if (ckpt_open(dir, &pv->ck, err)) goto fail;
    if (table_init(c, pv, dir, err)) goto fail;
    const ckpt_t *ck = &pv->ck;

    /* locate and check every tensor the config implies */
    for (int i = 0; i < pv->n; i++) {
        tref *w = &pv->t[i];
        if (i == AE_T_LM_HEAD && c->tie_embeddings) continue;
        if (!(w->f = ckpt_find(ck, w->name, &w->t, err))) {
            if (i == AE_T_LM_HEAD)
                ax_seterr(err, "%s: missing tensor 'lm_head.weight' and tie_word_embeddings is false in config.json",
                          ck->index ? dir : ck->files[0]->path);
            goto fail;
        }
        const ae_st_tensor *t = w->t;
        int nd = w->is_norm ? 1 : 2;
        int64_t r = w->is_norm ? (int64_t)w->cols : (int64_t)w->rows, cc = (int64_t)w->cols;
        if (t->ndim != nd || t->shape[0] != r || (nd == 2 && t->shape[1] != cc)) {
            char got[128] = "", *q = got;
            for (int d = 0; d < t->ndim && q < got + 100; d++)
                q += snprintf(q, (size_t)(got + sizeof got - q), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            if (nd == 2)
                ax_seterr(err, "%s: tensor '%s' has shape [%s], config.json implies [%lld, %lld]", w->f->path,
                          w->name, got, (long long)r, (long long)cc);
            else
                ax_seterr(err, "%s: tensor '%s' has shape [%s], config.json implies [%lld]", w->f->path, w->name,
                          got, (long long)r);
            goto fail;
        }
    }
    /* anything else in the files means the config and the checkpoint disagree */
    for (int k = 0; k < ck->nfiles; k++)
        for (int i = 0; i < ck->files[k]->n; i++) {
            const char *tn = ck->files[k]->t[i].name;
            int known = tolerated_extra(tn, c->tie_embeddings);
            for (int j = 0; j < pv->n && !known; j++)
                known = !(j == AE_T_LM_HEAD && c->tie_embeddings) && !strcmp(pv->t[j].name, tn);
            if (!known) {
                ax_seterr(err, "%s: unexpected tensor '%s' (config.json: %d layers, no biases%s)", ck->files[k]->path,
                          tn, c->n_layers, c->tie_embeddings ? ", tied embeddings" : "");
                goto fail;
            }
        }
    if (c->tie_embeddings) pv->t[AE_T_LM_HEAD] = pv->t[AE_T_EMB];
    snprintf(m->dtype, sizeof m->dtype, "%s", ae_dtype_name(pv->t[AE_T_EMB].t->dtype));   /* embed_tokens' dtype */
    *out = m;
    return 0;
oom:
    ax_seterr(err, "%s: out of memory", dir);
fail:
    ae_model_free(m);
    return -1;
}

/* ---- reads ------------------------------------------------------------------------------------- */
int ae_model_tensor_shape(const ae_model *m, int layer, ae_tensor_id id, size_t *rows, size_t *cols, char *name,
                          char *err) {
    const tref *r = ref_of(m, layer, id, err);
    if (!r) return -1;
    if (rows) *rows = r->rows;
    if (cols) *cols = r->cols;
    if (name) snprintf(name, 96, "%s", r->name);
    return 0;
}

int ae_model_virtual_params(const ae_model *m, int layer, ae_tensor_id id, uint64_t *tensor_seed, double *std,
                            float *constant, char *err) {
    const tref *r = ref_of(m, layer, id, err);
    if (!r) return -1;
    const model_priv *p = m->priv;
    if (!p->virt) return 0;
    *tensor_seed = r->seed;
    *std = r->is_norm ? 0.0 : 0.02;
    *constant = r->is_norm ? 1.0f : 0.0f;
    return 1;
}

#define RD_MAXT 64
typedef struct {
    const uint8_t *src;      /* file-backed: element 0 of the range                               */
    ae_dtype       dt;
    const float   *gen;      /* virtual: generated fp32 values of the range (or NULL)             */
    float         *d32;      /* one of d32 / d16                                                  */
    uint16_t      *d16;
    size_t         bad[RD_MAXT];   /* per thread: first offending index in the range, or SIZE_MAX */
    int            kind[RD_MAXT];  /* 1 NaN, 2 inf, 3 overflows fp16                               */
    float          val[RD_MAXT];
} rd_ctx;

static inline float rd_elem(const rd_ctx *c, size_t i) {
    const uint8_t *q = c->src + i * ae_dtype_size(c->dt);
    switch (c->dt) {
    case AE_DT_F32: { float v; memcpy(&v, q, 4); return v; }   /* little-endian host (x86-64, aarch64) */
    case AE_DT_F16: return aq_f16_to_f32((uint16_t)(q[0] | (q[1] << 8)));
    default: return aq_bf16_to_f32((uint16_t)(q[0] | (q[1] << 8)));
    }
}

static void rd_range(void *vc, long a, long b, int tid) {
    rd_ctx *c = vc;
    for (size_t i = (size_t)a; i < (size_t)b; i++) {
        if (c->d16 && !c->gen && c->dt == AE_DT_F16) {   /* copy the bits */
            const uint8_t *q = c->src + 2 * i;
            uint16_t h = (uint16_t)(q[0] | (q[1] << 8));
            if ((h & 0x7C00u) == 0x7C00u) {
                c->bad[tid] = i; c->kind[tid] = (h & 0x3FFu) ? 1 : 2; c->val[tid] = aq_f16_to_f32(h);
                return;
            }
            c->d16[i] = h;
            continue;
        }
        float v = c->gen ? c->gen[i] : rd_elem(c, i);
        if (!isfinite(v)) { c->bad[tid] = i; c->kind[tid] = isnan(v) ? 1 : 2; c->val[tid] = v; return; }
        if (c->d16 || c->gen) {
            uint16_t h = aq_f32_to_f16(v);
            if ((h & 0x7C00u) == 0x7C00u) { c->bad[tid] = i; c->kind[tid] = 3; c->val[tid] = v; return; }
            if (c->d16) c->d16[i] = h;
            else c->d32[i] = aq_f16_to_f32(h);   /* virtual fp32: the fp16 value widened */
        } else {
            c->d32[i] = v;
        }
    }
}

/* Run rd_range over n elements; -1 with err naming the first offending element. */
static int rd_run(rd_ctx *c, size_t n, size_t first, const char *src_name, const char *tname, char *err) {
    for (int t = 0; t < RD_MAXT; t++) c->bad[t] = SIZE_MAX;
    ae_parallel_for(0, (long)n, 1L << 18, rd_range, c);
    int worst = -1;
    for (int t = 0; t < RD_MAXT; t++)
        if (c->bad[t] != SIZE_MAX && (worst < 0 || c->bad[t] < c->bad[worst])) worst = t;
    if (worst < 0) return 0;
    size_t at = first + c->bad[worst];
    if (c->kind[worst] == 3)
        ax_seterr(err, "%s: tensor '%s' value %g at flat index %zu overflows fp16 (|v| > 65504 after rounding)",
                  src_name, tname, (double)c->val[worst], at);
    else
        ax_seterr(err, "%s: tensor '%s' holds a non-finite value (%s) at flat index %zu", src_name, tname,
                  c->kind[worst] == 1 ? "NaN" : "inf", at);
    return -1;
}

static int model_read(const ae_model *m, int layer, ae_tensor_id id, size_t r0, size_t nr, float *d32,
                      uint16_t *d16, char *err) {
    const tref *r = ref_of(m, layer, id, err);
    if (!r) return -1;
    if (nr > r->rows || r0 > r->rows - nr) {
        ax_seterr(err, "%s: tensor '%s': rows [%zu, %zu + %zu) outside its %zu rows", m->dir, r->name, r0, r0, nr,
                  r->rows);
        return -1;
    }
    size_t n = nr * r->cols, first = r0 * r->cols;
    if (n == 0) return 0;
    const model_priv *p = m->priv;
    rd_ctx *c = calloc(1, sizeof *c);
    if (!c) { ax_seterr(err, "%s: out of memory reading '%s'", m->dir, r->name); return -1; }
    c->d32 = d32;
    c->d16 = d16;
    int rc = 0;
    if (!p->virt) {
        c->dt = r->t->dtype;
        c->src = r->f->map + r->f->data_off + r->t->begin + first * ae_dtype_size(c->dt);
        rc = rd_run(c, n, first, r->f->path, r->name, err);
    } else if (r->is_norm) {
        for (size_t i = 0; i < n; i++) {
            if (d32) d32[i] = 1.0f;
            else d16[i] = 0x3C00u;   /* fp16 1.0 */
        }
    } else {
        /* generate in chunks of at most 1M values (fp16 reads need an fp32 staging buffer) */
        size_t chunk = d32 ? n : (n < ((size_t)1 << 20) ? n : ((size_t)1 << 20));
        float *tmp = d32 ? d32 : malloc(chunk * sizeof *tmp);
        if (!tmp) { free(c); ax_seterr(err, "%s: out of memory reading '%s'", m->dir, r->name); return -1; }
        for (size_t o = 0; o < n && !rc; o += chunk) {
            size_t k = n - o < chunk ? n - o : chunk;
            ae_gen_normal(r->seed, 0.02, first + o, k, d32 ? d32 + o : tmp);
            c->gen = d32 ? d32 + o : tmp;
            c->d32 = d32 ? d32 + o : NULL;
            c->d16 = d16 ? d16 + o : NULL;
            rc = rd_run(c, k, first + o, m->dir, r->name, err);
        }
        if (!d32) free(tmp);
    }
    free(c);
    return rc;
}

int ae_model_read_f32(const ae_model *m, int layer, ae_tensor_id id, size_t r0, size_t nr, float *dst, char *err) {
    return model_read(m, layer, id, r0, nr, dst, NULL, err);
}
int ae_model_read_f16(const ae_model *m, int layer, ae_tensor_id id, size_t r0, size_t nr, uint16_t *dst,
                      char *err) {
    return model_read(m, layer, id, r0, nr, NULL, dst, err);
}

/* ---- fingerprint ------------------------------------------------------------------------------ */
#define FP_BASIS 14695981039346656037ull
#define FP_PRIME 1099511628211ull
#define FP_CHUNK ((size_t)1 << 20)

static uint64_t fp_bytes(uint64_t h, const void *data, size_t n) {   /* FNV-1a 64 */
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= FP_PRIME; }
    return h;
}
/* one chunk: FNV-style over 8-byte words with an xorshift, seeded by the chunk length */
static uint64_t fp_chunk(const uint8_t *q, size_t n) {
    uint64_t h = FP_BASIS ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, q + i, 8);
        h = (h ^ w) * FP_PRIME;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ q[i]) * FP_PRIME;
    return h;
}
typedef struct { const uint8_t *data; size_t n; uint64_t *out; } fp_ctx;
static void fp_range(void *vc, long a, long b, int tid) {
    (void)tid;
    const fp_ctx *c = vc;
    for (long k = a; k < b; k++) {
        size_t o = (size_t)k * FP_CHUNK, len = c->n - o < FP_CHUNK ? c->n - o : FP_CHUNK;
        c->out[k] = fp_chunk(c->data + o, len);
    }
}

uint64_t ae_model_fingerprint(const ae_model *m) {
    const model_priv *p = m->priv;
    uint64_t h = FP_BASIS;
    if (p->virt) {
        h = fp_bytes(h, "apex4-virtual-v1|", 17);
        h = fp_bytes(h, p->cfg_text, strlen(p->cfg_text));
        return fp_bytes(h, &p->seed, sizeof p->seed);
    }
    h = fp_bytes(h, "apex4-weights-v1|", 17);
    uint64_t *ch = NULL;
    size_t cap = 0;
    for (int i = 0; i < p->n; i++) {
        const tref *r = &p->t[i];
        if (i == AE_T_LM_HEAD && m->cfg.tie_embeddings) continue;
        h = fp_bytes(h, r->name, strlen(r->name) + 1);
        uint64_t meta[3] = {(uint64_t)r->t->dtype, (uint64_t)r->rows, (uint64_t)r->cols};
        h = fp_bytes(h, meta, sizeof meta);
        size_t n = (size_t)(r->t->end - r->t->begin), nch = (n + FP_CHUNK - 1) / FP_CHUNK;
        if (nch > cap) {
            uint64_t *q = realloc(ch, nch * sizeof *q);
            if (!q) {   /* no memory for the chunk list: the same chunk hashes, one at a time */
                for (size_t k = 0; k < nch; k++) {
                    size_t o = k * FP_CHUNK, len = n - o < FP_CHUNK ? n - o : FP_CHUNK;
                    uint64_t v = fp_chunk(r->f->map + r->f->data_off + r->t->begin + o, len);
                    h = fp_bytes(h, &v, sizeof v);
                }
                continue;
            }
            ch = q;
            cap = nch;
        }
        fp_ctx c = {r->f->map + r->f->data_off + r->t->begin, n, ch};
        ae_parallel_for(0, (long)nch, 4, fp_range, &c);
        h = fp_bytes(h, ch, nch * sizeof *ch);
    }
    free(ch);
    return h;
}
