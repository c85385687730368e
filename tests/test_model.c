/* test_model.c — eval/model.c, eval/safetensors.c, eval/make_model.c: config.json parsing,
 * safetensors validation (every malformed-file case names the file and tensor), checkpoint loading
 * of the shared models, make-model round trips (sharded, f16/bf16/f32).
 *
 * Independent expectations: weight values of the shared checkpoints were read with python3's
 * struct module straight from the files (offset arithmetic by hand, see each comment); model
 * dimensions come from shared/models/MANIFEST.md; random weights are checked by their statistics
 * and by rounding relations between dtypes, not against values the code produced. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aq.h"
#include "ax_util.h"
#include "model.h"
#include "safetensors.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static void rm_tree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* A safetensors file by hand: u64 LE header length, the header text, then dlen data bytes (value
 * 0x3C, i.e. F16 1.0 pairs / small finite F32 values). */
static void write_st(const char *path, const char *header, size_t dlen) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    uint64_t n = strlen(header);
    for (int i = 0; i < 8; i++) fputc((int)((n >> (8 * i)) & 0xFF), f);
    fputs(header, f);
    for (size_t i = 0; i < dlen; i++) fputc(0x3C, f);
    fclose(f);
}

/* ae_st_open must fail with an error that contains every needle. */
static void expect_st_error(const char *path, const char *n1, const char *n2) {
    ae_st_file *f = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_neq(ae_st_open(path, &f, err), 0, "expected an error mentioning '%s'", n1);
    cr_assert_null(f);
    cr_assert_not_null(strstr(err, path), "error '%s' should name the file", err);
    cr_assert_not_null(strstr(err, n1), "error '%s' should mention '%s'", err, n1);
    if (n2) cr_assert_not_null(strstr(err, n2), "error '%s' should mention '%s'", err, n2);
}

static void expect_load_error(const char *dir, const char *n1, const char *n2) {
    ae_model *m = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_neq(ae_model_load(dir, &m, err), 0, "expected an error mentioning '%s'", n1);
    cr_assert_null(m);
    cr_assert_not_null(strstr(err, n1), "error '%s' should mention '%s'", err, n1);
    if (n2) cr_assert_not_null(strstr(err, n2), "error '%s' should mention '%s'", err, n2);
}

/* A small LLaMA config (GQA 4 heads over 2 KV heads, K = 256 and 512 multiples of 128). */
static void write_config(const char *path, int dim, int hidden, int layers, int vocab, int tie, const char *extra) {
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":%d,"
             "\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":4,"
             "\"num_key_value_heads\":2,\"vocab_size\":%d,\"max_position_embeddings\":256,"
             "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"tie_word_embeddings\":%s,"
             "\"torch_dtype\":\"float16\",\"bos_token_id\":1,\"eos_token_id\":2%s}\n",
             dim, hidden, layers, vocab, tie ? "true" : "false", extra ? extra : "");
    write_text(path, buf);
}

/* make-model into <dir>/<name>; returns the path in out. */
static void make(const char *dir, const char *cfg, uint64_t seed, const char *name, int shards, const char *dtype,
                 char *out, size_t len) {
    snprintf(out, len, "%s/%s", dir, name);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_make_model_ex(cfg, seed, out, shards, dtype, err), 0, "make_model: %s", err);
}

/* The whole tensor (layer, id) widened to fp32 (ae_model_read_f32); caller frees. */
static float *rd(const ae_model *m, int layer, ae_tensor_id id) {
    size_t r, c;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_model_tensor_shape(m, layer, id, &r, &c, NULL, err), 0, "%s", err);
    float *x = malloc(r * c * sizeof *x);
    cr_assert_not_null(x);
    cr_assert_eq(ae_model_read_f32(m, layer, id, 0, r, x, err), 0, "%s", err);
    return x;
}
/* One value: flat index k of tensor (layer, id), read as a one-row range. */
static float val(const ae_model *m, int layer, ae_tensor_id id, size_t k) {
    size_t r, c;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_model_tensor_shape(m, layer, id, &r, &c, NULL, err), 0, "%s", err);
    float *row = malloc(c * sizeof *row);
    cr_assert_not_null(row);
    cr_assert_eq(ae_model_read_f32(m, layer, id, k / c, 1, row, err), 0, "%s", err);
    float v = row[k % c];
    free(row);
    return v;
}
/* Tensor (layer, id) is read from the tensor called name (tied lm_head: embed_tokens). */
static int reads_from(const ae_model *m, int layer, ae_tensor_id id, const char *name) {
    char nm[96], err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_model_tensor_shape(m, layer, id, NULL, NULL, nm, err), 0, "%s", err);
    return !strcmp(nm, name);
}

static ae_model *load_ok(const char *dir) {
    ae_model *m = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_model_load(dir, &m, err), 0, "%s", err);
    return m;
}

static int shared_model(const char *name, char *path, size_t len) {
    char rel[128], err[AX_ERR_LEN];
    snprintf(rel, sizeof rel, "models/%s/config.json", name);
    if (ax_data_file(rel, NULL, path, len, err)) {
        cr_skip_test("skipped: no data root with %s (%s)", rel, err);
        return -1;
    }
    *strrchr(path, '/') = 0;
    return 0;
}

/* ---- the shared checkpoints ------------------------------------------------------------------ */

Test(model_shared, stories260K_loads_with_manifest_shapes_and_file_values) {
    char dir[AX_PATH_LEN];
    if (shared_model("stories260K", dir, sizeof dir)) return;
    ae_model *m = load_ok(dir);
    const ae_config *c = &m->cfg;
    /* MANIFEST.md table: dim 64, hidden 172, 5 layers, 8 heads, 4 KV heads, head_dim 8, vocab 512,
     * max positions 512, theta 10000, eps 1e-5, tied, bos 1, eos 2, float32 */
    cr_assert_eq(c->dim, 64); cr_assert_eq(c->hidden_dim, 172); cr_assert_eq(c->n_layers, 5);
    cr_assert_eq(c->n_heads, 8); cr_assert_eq(c->n_kv_heads, 4); cr_assert_eq(c->head_dim, 8);
    cr_assert_eq(c->vocab_size, 512); cr_assert_eq(c->max_pos, 512);
    cr_assert_eq(c->rope_theta, 10000.0f); cr_assert_eq(c->rms_eps, 1e-5f);
    cr_assert_eq(c->tie_embeddings, 1); cr_assert_eq(c->rope_llama3, 0);
    cr_assert_eq(c->bos_id, 1); cr_assert_eq(c->eos_id, 2);
    cr_assert_str_eq(m->dtype, "F32");
    cr_assert(reads_from(m, -1, AE_T_LM_HEAD, "model.embed_tokens.weight"), "tied: lm_head reads the embeddings");
    /* values read with python3 struct.unpack('<f', …) at header-given offsets:
     * embed_tokens[0..2], layers.0.q_proj[0], layers.4.down_proj[last], norm[0] */
    cr_assert_eq(val(m, -1, AE_T_EMB, 0), -0.29474878311157227f);
    cr_assert_eq(val(m, -1, AE_T_EMB, 1), 0.5618956089019775f);
    cr_assert_eq(val(m, -1, AE_T_EMB, 2), 0.1754225343465805f);
    cr_assert_eq(val(m, -1, AE_T_LM_HEAD, 2), 0.1754225343465805f);
    cr_assert_eq(val(m, 0, AE_T_WQ, 0), 0.04439278692007065f);
    cr_assert_eq(val(m, 4, AE_T_DOWN, 64 * 172 - 1), -0.0035068716388195753f);
    cr_assert_eq(val(m, -1, AE_T_FINAL_NORM, 0), 2.4583089351654053f);
    ae_model_free(m);
}

Test(model_shared, wiki_gutenberg_13M_loads_f16_exactly) {
    char dir[AX_PATH_LEN];
    if (shared_model("wiki-gutenberg-13M", dir, sizeof dir)) return;
    ae_model *m = load_ok(dir);
    const ae_config *c = &m->cfg;
    /* MANIFEST.md: hidden 256, intermediate 768, 6 layers, 4 heads of 64, 2 KV heads, vocab 32000,
     * tied, 2048 positions */
    cr_assert_eq(c->dim, 256); cr_assert_eq(c->hidden_dim, 768); cr_assert_eq(c->n_layers, 6);
    cr_assert_eq(c->n_heads, 4); cr_assert_eq(c->head_dim, 64); cr_assert_eq(c->n_kv_heads, 2);
    cr_assert_eq(c->vocab_size, 32000); cr_assert_eq(c->max_pos, 2048); cr_assert_eq(c->tie_embeddings, 1);
    cr_assert_str_eq(m->dtype, "F16");
    /* python3 struct.unpack('<e', …): fp16 values widen exactly */
    cr_assert_eq(val(m, -1, AE_T_EMB, 0), 0.1109619140625f);
    cr_assert_eq(val(m, -1, AE_T_EMB, 1), -0.04083251953125f);
    cr_assert_eq(val(m, -1, AE_T_EMB, 2), 0.125732421875f);
    cr_assert_eq(val(m, 0, AE_T_WQ, 0), -0.027435302734375f);
    cr_assert_eq(val(m, 5, AE_T_DOWN, 256 * 768 - 1), -0.07708740234375f);
    cr_assert_eq(val(m, -1, AE_T_FINAL_NORM, 0), 2.0703125f);
    ae_model_free(m);
}

/* ---- make-model round trips ------------------------------------------------------------------- */

static double mean_of(const float *x, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += x[i]; return s / (double)n; }
static double std_of(const float *x, size_t n) {
    double mu = mean_of(x, n), s = 0;
    for (size_t i = 0; i < n; i++) s += (x[i] - mu) * (x[i] - mu);
    return sqrt(s / (double)n);
}

Test(make_model, random_checkpoint_has_config_shapes_and_init_statistics) {
    char dir[64], cfg[128], out[256];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    write_config(cfg, 256, 512, 2, 384, 0, NULL);
    make(dir, cfg, 42, "m", 1, NULL, out, sizeof out);
    ae_model *m = load_ok(out);
    cr_assert_str_eq(m->dtype, "F16", "torch_dtype float16 in the config");
    cr_assert_eq(m->cfg.n_kv_heads, 2);
    cr_assert(reads_from(m, -1, AE_T_LM_HEAD, "lm_head.weight"), "untied: its own lm_head");
    /* N(0, 0.02²): over n = 384*256 = 98,304 samples the sample std has a standard error of
     * 0.02/sqrt(2n) = 4.5e-5 and the mean 0.02/sqrt(n) = 6.4e-5: 5e-4 and 5e-4 tolerances are ~10 sigma */
    float *mats[] = {rd(m, -1, AE_T_EMB), rd(m, -1, AE_T_LM_HEAD), rd(m, 1, AE_T_DOWN)};
    size_t ns[] = {384 * 256, 384 * 256, 256 * 512};
    for (int i = 0; i < 3; i++) {
        cr_assert(fabs(mean_of(mats[i], ns[i])) < 5e-4, "mean %g", mean_of(mats[i], ns[i]));
        cr_assert(fabs(std_of(mats[i], ns[i]) - 0.02) < 5e-4, "std %g", std_of(mats[i], ns[i]));
        free(mats[i]);
    }
    for (int l = 0; l < 2; l++) {
        float *an = rd(m, l, AE_T_ATTN_NORM), *fn = rd(m, l, AE_T_FFN_NORM);
        for (int k = 0; k < 256; k++) {
            cr_assert_eq(an[k], 1.0f);
            cr_assert_eq(fn[k], 1.0f);
        }
        free(an); free(fn);
    }
    /* distinct tensors draw distinct streams */
    cr_assert_neq(val(m, 0, AE_T_WQ, 0), val(m, 1, AE_T_WQ, 0));
    ae_model_free(m);
    rm_tree(dir);
}

Test(make_model, sharding_and_dtype_keep_values_and_same_seed_same_bytes) {
    char dir[64], cfg[128], a[256], b[256], c[256], d[256], e[256], err[AX_ERR_LEN];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    write_config(cfg, 128, 256, 2, 256, 1, NULL);
    make(dir, cfg, 7, "f32", 1, "f32", a, sizeof a);
    make(dir, cfg, 7, "f16x3", 3, "f16", b, sizeof b);
    make(dir, cfg, 7, "bf16", 1, "bf16", c, sizeof c);
    make(dir, cfg, 7, "f32again", 1, "f32", d, sizeof d);
    make(dir, cfg, 8, "seed8", 1, "f32", e, sizeof e);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", b);
    cr_assert_eq(access(p, R_OK), 0, "sharded output has an index");
    snprintf(p, sizeof p, "%s/model-00003-of-00003.safetensors", b);
    cr_assert_eq(access(p, R_OK), 0, "third shard exists");
    ae_model *m32 = load_ok(a), *m16 = load_ok(b), *mbf = load_ok(c), *ms = load_ok(e);
    cr_assert_str_eq(m16->dtype, "F16");
    cr_assert_str_eq(mbf->dtype, "BF16");
    /* f16 = RNE(f32) (aq_f32_to_f16 is the contract's rounding); bf16 = RNE to the top 16 bits,
     * computed here independently: add 0x7FFF + lsb and truncate */
    size_t n = 256 * 128;
    float *e32 = rd(m32, -1, AE_T_EMB), *e16 = rd(m16, -1, AE_T_EMB), *ebf = rd(mbf, -1, AE_T_EMB);
    for (size_t i = 0; i < n; i++) {
        float v = e32[i];
        cr_assert_eq(e16[i], aq_f16_to_f32(aq_f32_to_f16(v)), "i=%zu", i);
        uint32_t u;
        memcpy(&u, &v, 4);
        uint32_t r = ((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16) << 16;
        float vb;
        memcpy(&vb, &r, 4);
        cr_assert_eq(ebf[i], vb, "i=%zu", i);
    }
    free(e32); free(e16); free(ebf);
    cr_assert_eq(val(m16, 1, AE_T_DOWN, 5), aq_f16_to_f32(aq_f32_to_f16(val(m32, 1, AE_T_DOWN, 5))));
    cr_assert_neq(val(ms, -1, AE_T_EMB, 0), val(m32, -1, AE_T_EMB, 0), "another seed, other values");
    /* same seed twice: byte-identical files */
    char ha[65], hd[65], pa[512], pd[512];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pd, sizeof pd, "%s/model.safetensors", d);
    cr_assert_eq(ax_sha256_file(pa, ha, err), 0, "%s", err);
    cr_assert_eq(ax_sha256_file(pd, hd, err), 0, "%s", err);
    cr_assert_str_eq(ha, hd);
    ae_model_free(m32); ae_model_free(m16); ae_model_free(mbf); ae_model_free(ms);
    /* the written config says what was written */
    ae_config cc;
    snprintf(p, sizeof p, "%s/config.json", c);
    char *txt = NULL;
    size_t len = 0;
    cr_assert_eq(ax_read_file(p, &txt, &len, err), 0, "%s", err);
    cr_assert_not_null(strstr(txt, "\"bfloat16\""), "%s", txt);
    free(txt);
    cr_assert_eq(ae_config_load(p, &cc, err), 0, "%s", err);
    rm_tree(dir);
}

Test(make_model, rejects_bad_arguments) {
    char dir[64], cfg[128], out[256], err[AX_ERR_LEN] = "";
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(out, sizeof out, "%s/m", dir);
    write_config(cfg, 128, 256, 1, 64, 1, NULL);
    cr_assert_neq(ae_make_model_ex(cfg, 1, out, 1, "f8", err), 0);
    cr_assert_not_null(strstr(err, "f8"), "%s", err);
    cr_assert_neq(ae_make_model(cfg, 1, out, 0, err), 0);
    /* tied, 1 layer: 1 + 9 + 1 = 11 tensors, so 12 shards cannot all be non-empty */
    cr_assert_neq(ae_make_model(cfg, 1, out, 12, err), 0);
    cr_assert_not_null(strstr(err, "shards"), "%s", err);
    cr_assert_eq(ae_make_model(cfg, 1, out, 11, err), 0, "%s", err);
    ae_model *m = load_ok(out);
    ae_model_free(m);
    char nocfg[160];
    snprintf(nocfg, sizeof nocfg, "%s/none.json", dir);
    cr_assert_neq(ae_make_model(nocfg, 1, out, 1, err), 0);
    cr_assert_not_null(strstr(err, nocfg), "%s", err);
    rm_tree(dir);
}

/* ---- config.json ------------------------------------------------------------------------------ */

static void expect_config_error(const char *json, const char *needle) {
    char dir[64], p[128], err[AX_ERR_LEN] = "";
    ae_config c;
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, json);
    cr_assert_neq(ae_config_load(p, &c, err), 0, "expected an error mentioning '%s'", needle);
    cr_assert_not_null(strstr(err, needle), "error '%s' should mention '%s'", err, needle);
    cr_assert_not_null(strstr(err, "config.json"), "error '%s' should name the file", err);
    rm_tree(dir);
}

#define BASE "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":32"

Test(model_config, defaults_follow_hf_llama_config) {
    char dir[64], p[128], err[AX_ERR_LEN] = "";
    ae_config c;
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, "{" BASE "}");
    cr_assert_eq(ae_config_load(p, &c, err), 0, "%s", err);
    /* HF LlamaConfig defaults: kv heads = heads, head_dim = 64/4, eps 1e-6, theta 10000, 2048
     * positions, untied, no bos/eos */
    cr_assert_eq(c.n_kv_heads, 4); cr_assert_eq(c.head_dim, 16); cr_assert_eq(c.rms_eps, 1e-6f);
    cr_assert_eq(c.rope_theta, 10000.0f); cr_assert_eq(c.max_pos, 2048); cr_assert_eq(c.tie_embeddings, 0);
    cr_assert_eq(c.bos_id, -1); cr_assert_eq(c.eos_id, -1);
    /* Llama-3 style: rope_scaling llama3, eos list (first used), explicit head_dim */
    write_text(p, "{" BASE ",\"head_dim\":32,\"rope_theta\":500000.0,\"eos_token_id\":[128001,128008],"
                  "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                  "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}");
    cr_assert_eq(ae_config_load(p, &c, err), 0, "%s", err);
    cr_assert_eq(c.head_dim, 32); cr_assert_eq(c.rope_theta, 500000.0f); cr_assert_eq(c.eos_id, 128001);
    cr_assert_eq(c.rope_llama3, 1); cr_assert_eq(c.rope_factor, 8.0f); cr_assert_eq(c.rope_low_freq_factor, 1.0f);
    cr_assert_eq(c.rope_high_freq_factor, 4.0f); cr_assert_eq(c.rope_orig_max_pos, 8192);
    /* newer transformers: rope_parameters {rope_theta, rope_type} */
    write_text(p, "{" BASE ",\"rope_parameters\":{\"rope_theta\":250000.0,\"rope_type\":\"default\"}}");
    cr_assert_eq(ae_config_load(p, &c, err), 0, "%s", err);
    cr_assert_eq(c.rope_theta, 250000.0f); cr_assert_eq(c.rope_llama3, 0);
    rm_tree(dir);
}

Test(model_config, errors_name_the_field) {
    expect_config_error("{\"hidden_size\": 64,", "not valid JSON");
    expect_config_error("{\"intermediate_size\":128,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":32}",
                        "hidden_size");
    expect_config_error("{" BASE ",\"num_key_value_heads\":3}", "num_key_value_heads");
    expect_config_error("{" BASE ",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0}}", "yarn");
    expect_config_error("{" BASE ",\"model_type\":\"mistral\"}", "mistral");
    expect_config_error("{" BASE ",\"attention_bias\":true}", "attention_bias");
    expect_config_error("{\"hidden_size\":-3,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "hidden_size");
    expect_config_error("{" BASE ",\"rms_norm_eps\":\"small\"}", "rms_norm_eps");
    expect_config_error("{\"hidden_size\":65,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "not a multiple");
}

/* ---- safetensors validation ------------------------------------------------------------------- */

Test(safetensors, hand_made_file_parses) {
    char dir[64], p[128], err[AX_ERR_LEN] = "";
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/x.safetensors", dir);
    /* two F16 tensors: a [2,3] at [0,12), b [4] at [12,20); data bytes 0x3C 0x3C = fp16 0x3C3C =
     * 2^(15-15) * (1 + 0x03C/1024) = 1.05859375 */
    write_st(p, "{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]},"
                "\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}   ", 20);
    ae_st_file *f = NULL;
    cr_assert_eq(ae_st_open(p, &f, err), 0, "%s", err);
    cr_assert_eq(f->n, 2);
    const ae_st_tensor *a = ae_st_find(f, "a");
    cr_assert_not_null(a);
    cr_assert_eq(a->ndim, 2); cr_assert_eq(a->shape[0], 2); cr_assert_eq(a->shape[1], 3); cr_assert_eq(a->numel, 6);
    float v[6];
    cr_assert_eq(ae_st_read_f32(f, a, v, err), 0, "%s", err);
    for (int i = 0; i < 6; i++) cr_assert_eq(v[i], 1.05859375f);
    cr_assert_null(ae_st_find(f, "c"));
    ae_st_close(f);
    rm_tree(dir);
}

Test(safetensors, malformed_files_are_rejected_with_named_errors) {
    char dir[64], p[128];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/x.safetensors", dir);
    const char *okt = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[512];

    write_text(p, "abc");                                   /* shorter than the length prefix */
    expect_st_error(p, "too short", NULL);

    FILE *f = fopen(p, "wb");                               /* header length past the end */
    const unsigned char big[8] = {0x00, 0x10, 0, 0, 0, 0, 0, 0};   /* 4096 */
    fwrite(big, 1, 8, f);
    fputs("{}", f);
    fclose(f);
    expect_st_error(p, "exceeds the file size", NULL);

    write_st(p, "{\"a\":{\"dtype\":\"F32\",", 8);           /* truncated JSON */
    expect_st_error(p, "not valid JSON", NULL);
    write_st(p, "[1,2]", 0);
    expect_st_error(p, "does not start with '{'", NULL);

    snprintf(h, sizeof h, "{%s}", okt);                     /* truncated data section */
    write_st(p, h, 7);
    expect_st_error(p, "'a'", "exceed the data section");

    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,80]}}", 8);   /* offset past end */
    expect_st_error(p, "'a'", "exceed");

    write_st(p, "{\"a\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);   /* unknown dtype */
    expect_st_error(p, "'a'", "unknown dtype 'Q4_K'");
    write_st(p, "{\"a\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8);    /* real, unsupported */
    expect_st_error(p, "'a'", "I8 is not supported");

    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);   /* 3*4 != 8 */
    expect_st_error(p, "'a'", "12 bytes");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "'a'", "shape[0]");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8);
    expect_st_error(p, "'a'", "end < begin");

    /* overlap: b [0,8) and a [4,12) */
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12);
    expect_st_error(p, "overlap", "'a'");
    /* gap: [0,8) then [12,20) */
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20);
    expect_st_error(p, "belong to no tensor", "'b'");
    /* trailing bytes after the last tensor */
    snprintf(h, sizeof h, "{%s}", okt);
    write_st(p, h, 9);
    expect_st_error(p, "trailing", NULL);
    /* the same name twice */
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16);
    expect_st_error(p, "duplicate key \"a\"", NULL);   /* strict parse, as safetensors' serde */
    rm_tree(dir);
}

/* ---- checkpoint validation against the config -------------------------------------------------- */

/* A tiny f32 checkpoint (dim 8, hidden 16, 1 layer, 4 heads / 2 KV heads of 2, vocab 16). */
static void tiny(const char *dir, int tie, char *out, size_t len) {
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/tiny-config.json", dir);
    write_config(cfg, 8, 16, 1, 16, tie, NULL);
    make(dir, cfg, 3, tie ? "tied" : "untied", 1, "f32", out, len);
}

Test(model_load, nan_in_a_weight_is_named_at_read) {
    char dir[64], m[256], p[512], err[AX_ERR_LEN];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    tiny(dir, 1, m, sizeof m);
    snprintf(p, sizeof p, "%s/model.safetensors", m);
    ae_st_file *f = NULL;
    cr_assert_eq(ae_st_open(p, &f, err), 0, "%s", err);
    const ae_st_tensor *t = ae_st_find(f, "model.layers.0.mlp.up_proj.weight");
    cr_assert_not_null(t);
    long off = (long)(f->data_off + t->begin + 4 * 5);   /* flat index 5 */
    ae_st_close(f);
    FILE *fp = fopen(p, "r+b");
    cr_assert_not_null(fp);
    fseek(fp, off, SEEK_SET);
    const unsigned char nan[4] = {0x00, 0x00, 0xC0, 0x7F};   /* 0x7FC00000 = quiet NaN */
    fwrite(nan, 1, 4, fp);
    fclose(fp);
    /* lazy access: the load reads no value; the read that meets the NaN names file, tensor, index */
    ae_model *mm = load_ok(m);
    float buf[16 * 8];
    uint16_t b16[16 * 8];
    cr_assert_neq(ae_model_read_f32(mm, 0, AE_T_UP, 0, 16, buf, err), 0);
    const char *want[] = {p, "'model.layers.0.mlp.up_proj.weight'", "NaN", "flat index 5"};
    for (int i = 0; i < 4; i++) cr_assert_not_null(strstr(err, want[i]), "'%s' should mention '%s'", err, want[i]);
    cr_assert_neq(ae_model_read_f16(mm, 0, AE_T_UP, 0, 1, b16, err), 0);
    for (int i = 0; i < 4; i++) cr_assert_not_null(strstr(err, want[i]), "'%s' should mention '%s'", err, want[i]);
    /* rows 1..15 do not hold it (index 5 is in row 0 of [16, 8]) */
    cr_assert_eq(ae_model_read_f32(mm, 0, AE_T_UP, 1, 15, buf, err), 0, "%s", err);
    ae_model_free(mm);
    rm_tree(dir);
}

Test(model_load, config_and_checkpoint_must_agree) {
    char dir[64], m[256], p[512], err[AX_ERR_LEN];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    tiny(dir, 1, m, sizeof m);
    snprintf(p, sizeof p, "%s/config.json", m);
    /* more layers in the config than in the file: the first absent tensor is named */
    write_config(p, 8, 16, 2, 16, 1, NULL);
    expect_load_error(m, "missing tensor 'model.layers.1.input_layernorm.weight'", NULL);
    /* fewer: the file's extra tensors are reported */
    tiny(dir, 1, m, sizeof m);
    char two[300];
    snprintf(p, sizeof p, "%s/tiny-config.json", dir);
    write_config(p, 8, 16, 2, 16, 1, NULL);
    make(dir, p, 3, "two", 1, "f32", two, sizeof two);
    snprintf(p, sizeof p, "%s/config.json", two);
    write_config(p, 8, 16, 1, 16, 1, NULL);
    expect_load_error(two, "unexpected tensor 'model.layers.1.", NULL);
    /* a different intermediate_size: the first tensor with that dimension is named, with both shapes */
    write_config(p, 8, 24, 2, 16, 1, NULL);
    expect_load_error(two, "model.layers.0.mlp.gate_proj.weight", "[16, 8], config.json implies [24, 8]");
    /* tie_word_embeddings false without lm_head.weight */
    write_config(p, 8, 16, 2, 16, 0, NULL);
    expect_load_error(two, "lm_head.weight", "tie_word_embeddings");
    /* a tied config ignores a stored lm_head (HF ties it); the untied one loads its own */
    char un[300];
    snprintf(p, sizeof p, "%s/tiny-config.json", dir);
    write_config(p, 8, 16, 1, 16, 0, NULL);
    make(dir, p, 3, "un", 1, "f32", un, sizeof un);
    ae_model *mm = load_ok(un);
    cr_assert(reads_from(mm, -1, AE_T_LM_HEAD, "lm_head.weight"));
    ae_model_free(mm);
    snprintf(p, sizeof p, "%s/config.json", un);
    write_config(p, 8, 16, 1, 16, 1, NULL);
    mm = load_ok(un);
    cr_assert(reads_from(mm, -1, AE_T_LM_HEAD, "model.embed_tokens.weight"));
    ae_model_free(mm);
    /* no weights at all */
    snprintf(p, sizeof p, "%s/model.safetensors", un);
    cr_assert_eq(unlink(p), 0);
    expect_load_error(un, "neither model.safetensors nor model.safetensors.index.json", NULL);
    /* no config */
    snprintf(p, sizeof p, "%s/config.json", m);
    cr_assert_eq(unlink(p), 0);
    expect_load_error(m, "config.json", NULL);
    (void)err;
    rm_tree(dir);
}

Test(model_load, sharded_index_errors_name_the_shard) {
    char dir[64], cfg[128], m[256], p[512];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    write_config(cfg, 8, 16, 2, 16, 1, NULL);
    make(dir, cfg, 5, "sh", 3, "f16", m, sizeof m);
    ae_model *mm = load_ok(m);
    ae_model_free(mm);
    snprintf(p, sizeof p, "%s/model-00002-of-00003.safetensors", m);
    cr_assert_eq(unlink(p), 0);
    expect_load_error(m, "model-00002-of-00003.safetensors", NULL);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", m);
    write_text(p, "{\"weight_map\": {\"model.norm.weight\": \"../evil.safetensors\"}}");
    expect_load_error(m, "not a file name", NULL);
    rm_tree(dir);
}

/* ---- the CLI front end ------------------------------------------------------------------------- */

static int run_status(const char *cmd) {
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

Test(make_model_cli, writes_a_loadable_checkpoint_and_exits_2_on_bad_usage) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) { cr_skip_test("skipped: APEX4_BIN not set (run through make test)"); return; }
    char dir[64], cfg[128], out[256], cmd[1024];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    snprintf(out, sizeof out, "%s/m", dir);
    write_config(cfg, 128, 256, 1, 64, 0, NULL);
    snprintf(cmd, sizeof cmd, "'%s' make-model --config '%s' --seed 9 --out '%s' --shards 2 --dtype bf16 >/dev/null",
             bin, cfg, out);
    cr_assert_eq(run_status(cmd), 0);
    ae_model *m = load_ok(out);
    cr_assert_str_eq(m->dtype, "BF16");
    ae_model_free(m);
    snprintf(cmd, sizeof cmd, "'%s' make-model --config '%s' --out '%s' 2>/dev/null", bin, cfg, out);
    cr_assert_eq(run_status(cmd), 2, "missing --seed");
    snprintf(cmd, sizeof cmd, "'%s' make-model --config '%s' --seed x --out '%s' 2>/dev/null", bin, cfg, out);
    cr_assert_eq(run_status(cmd), 2, "bad --seed");
    snprintf(cmd, sizeof cmd, "'%s' make-model --config '%s/none.json' --seed 1 --out '%s' 2>/dev/null", bin, dir, out);
    cr_assert_eq(run_status(cmd), 2, "missing config");
    rm_tree(dir);
}

/* ==== hostile input (issue: black-box mutation run against the ASan+UBSan build) ================= */

/* A safetensors file from raw bytes: u64 LE length, hlen header bytes (may hold NULs), dlen data bytes. */
static void write_st_raw(const char *path, const char *header, size_t hlen, size_t dlen) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    for (int i = 0; i < 8; i++) fputc((int)(((uint64_t)hlen >> (8 * i)) & 0xFF), f);
    cr_assert_eq(fwrite(header, 1, hlen, f), hlen);
    for (size_t i = 0; i < dlen; i++) fputc(0x3C, f);
    fclose(f);
}

/* ---- config.json: strict JSON, types, ranges; every message names the file and the key ---------- */

#define FULL(extra) "{\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1," \
                    "\"num_attention_heads\":4,\"vocab_size\":32" extra "}"

Test(model_config, strict_json_duplicates_trailing_garbage_and_nul) {
    /* Python's json keeps the last duplicate; we reject it (ax_json_parse_strict) */
    expect_config_error("{\"hidden_size\":64,\"hidden_size\":128,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "duplicate key \"hidden_size\"");
    expect_config_error(FULL("") " x", "trailing data");
    expect_config_error(FULL("") "{}", "trailing data");
    expect_config_error(FULL(",\"model_type\":\"llama\\u0000junk\""), "\\u0000");
}

Test(model_config, wrong_json_types_name_key_and_expectation) {
    expect_config_error(FULL(",\"attention_bias\":\"yes\""), "\"attention_bias\" must be a boolean, got a string");
    expect_config_error(FULL(",\"mlp_bias\":1"), "\"mlp_bias\" must be a boolean, got a number");
    expect_config_error(FULL(",\"tie_word_embeddings\":\"true\""), "\"tie_word_embeddings\" must be a boolean, got a string");
    expect_config_error(FULL(",\"rope_scaling\":{\"rope_type\":[\"llama3\"]}"),
                        "\"rope_scaling.rope_type\" must be a string, got an array");
    expect_config_error(FULL(",\"rope_parameters\":{\"rope_theta\":1e4,\"rope_type\":7}"),
                        "\"rope_parameters.rope_type\" must be a string, got a number");
    expect_config_error(FULL(",\"rope_scaling\":[1]"), "\"rope_scaling\" must be an object or null, got an array");
    expect_config_error(FULL(",\"model_type\":5"), "\"model_type\" must be a string, got a number");
    expect_config_error(FULL(",\"hidden_act\":[\"silu\"]"), "\"hidden_act\" must be a string, got an array");
    expect_config_error(FULL(",\"torch_dtype\":16"), "\"torch_dtype\" must be a string, got a number");
    expect_config_error(FULL(",\"eos_token_id\":\"2\""), "\"eos_token_id\" must be a token id");
    expect_config_error(FULL(",\"eos_token_id\":[2,\"x\"]"), "got a string in the list");
    expect_config_error(FULL(",\"num_key_value_heads\":true"), "\"num_key_value_heads\" must be an integer in [1, 4096], got a boolean");
    expect_config_error(FULL(",\"rms_norm_eps\":\"1e-5\""), "\"rms_norm_eps\" must be a number in (0, 1], got a string");
    expect_config_error("[1,2]", "must be a JSON object, got an array");
}

Test(model_config, numbers_out_of_range_name_the_field) {
    /* fractional, huge and negative dims (the range [1, 65536] is model.h's documented limit) */
    expect_config_error("{\"hidden_size\":64.5,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "\"hidden_size\" must be an integer in [1, 65536], got 64.5");
    expect_config_error("{\"hidden_size\":1e20,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "\"hidden_size\" must be an integer in [1, 65536], got 1e+20");
    expect_config_error("{\"hidden_size\":1000000000,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "got 1000000000");
    expect_config_error("{\"hidden_size\":64,\"intermediate_size\":-128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "\"intermediate_size\" must be an integer in [1, 1048576], got -128");
    expect_config_error("{\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":0,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "\"num_hidden_layers\" must be an integer in [1, 1024], got 0");
    expect_config_error("{\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1000000,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "\"num_hidden_layers\" must be an integer in [1, 1024], got 1000000");
    /* vocab_size * hidden_size that would overflow a 64-bit size_t (2^40 * 2^16 * 4 bytes): the
     * vocab_size bound catches it first, naming the field */
    expect_config_error("{\"hidden_size\":65536,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":1099511627776}", "\"vocab_size\" must be an integer in [1, 4194304]");
    /* 4096 heads of 4096: 2^24 attention width > 4 * 65536 */
    expect_config_error("{\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4096,\"head_dim\":4096,\"vocab_size\":32}", "num_attention_heads * head_dim");
    /* head_dim odd: explicit, and implied (hidden 60 / 4 heads = 15) */
    expect_config_error(FULL(",\"head_dim\":15"), "\"head_dim\" 15 is odd");
    expect_config_error("{\"hidden_size\":60,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                        "\"num_attention_heads\":4,\"vocab_size\":32}", "\"head_dim\" 15 is odd");
    expect_config_error(FULL(",\"rope_theta\":1e300"), "\"rope_theta\" must be a number in (0, 1e+12], got 1e+300");
    expect_config_error(FULL(",\"rms_norm_eps\":-1"), "\"rms_norm_eps\"");
    expect_config_error(FULL(",\"max_position_embeddings\":4294967296"), "\"max_position_embeddings\"");
    expect_config_error(FULL(",\"bos_token_id\":-1"), "\"bos_token_id\" must be a token id");
}

/* ---- safetensors header: strict JSON and types ---------------------------------------------- */

Test(safetensors, hostile_headers_are_rejected_naming_the_file) {
    char dir[64], p[128];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/x.safetensors", dir);
    /* a \u0000 escape in a tensor name: the C string would read as "model.norm.weight" */
    write_st(p, "{\"model.norm.weight\\u0000evil\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "\\u0000", "header");
    /* ... and in a dtype: "F32\u0000junk" would read as F32 */
    write_st(p, "{\"a\":{\"dtype\":\"F32\\u0000junk\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "\\u0000", NULL);
    /* a raw NUL byte inside the header */
    const char raw[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}\0\0\0\0";
    write_st_raw(p, raw, sizeof raw - 1, 8);
    expect_st_error(p, "NUL byte", NULL);
    /* something other than space padding after the object */
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8);
    expect_st_error(p, "trailing data", NULL);
    /* types */
    write_st(p, "{\"a\":5}", 0);
    expect_st_error(p, "'a'", "must be an object");
    write_st(p, "{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "'a'", "\"dtype\" must be a string, got a number");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "'a'", "\"shape\" must be an array of non-negative integers, got a string");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "'a'", "shape[0] must be a non-negative integer (<= 2^53), got a string");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 10);
    expect_st_error(p, "'a'", "got 2.5");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "'a'", "shape[0]");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,16]}}", 16);
    expect_st_error(p, "'a'", "\"data_offsets\" must be [begin, end]");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}", 8);
    expect_st_error(p, "'a'", "\"data_offsets\" must hold 2 non-negative integers");
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8);
    expect_st_error(p, "'a'", "\"data_offsets\"");
    write_st(p, "{\"__metadata__\":[1],\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "\"__metadata__\" must be an object of strings, got an array", NULL);
    write_st(p, "{\"__metadata__\":{\"format\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "\"__metadata__\" value \"format\" must be a string, got a number", NULL);
    /* element count 2^32 * 2^32 = 2^64 overflows a 64-bit size_t before any offset comparison */
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "'a'", "overflows");
    /* 2^31 * 2^31 = 2^62 elements fit, x 4 bytes = 2^64 does not */
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", 8);
    expect_st_error(p, "'a'", "bytes");
    expect_st_error(p, "overflows", NULL);
    /* an empty path and an absurdly long one */
    ae_st_file *f = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_neq(ae_st_open("", &f, err), 0);
    cr_assert(strstr(err, "empty path"), "%s", err);
    rm_tree(dir);
}

/* ---- sharded checkpoints: shard names of any length, names that escape the folder --------------- */

/* Rewrite <m>/model.safetensors.index.json with every occurrence of `from` replaced by `to`. */
static void index_replace(const char *m, const char *from, const char *to) {
    char p[600], err[AX_ERR_LEN];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", m);
    char *txt = NULL;
    size_t len = 0;
    cr_assert_eq(ax_read_file(p, &txt, &len, err), 0, "%s", err);
    size_t fl = strlen(from), tl = strlen(to), cap = len * 2 + 4096 + 64 * tl, o = 0;
    char *out = malloc(cap);
    cr_assert_not_null(out);
    for (const char *q = txt; *q;) {
        if (!strncmp(q, from, fl)) { memcpy(out + o, to, tl); o += tl; q += fl; }
        else out[o++] = *q++;
        cr_assert_lt(o + tl, cap);
    }
    out[o] = 0;
    write_text(p, out);
    free(out);
    free(txt);
}

Test(model_load, shard_names_longer_than_90_chars_load_the_right_files) {
    char dir[64], cfg[128], m[256], one[256], a[600], b[600];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    write_config(cfg, 8, 16, 2, 16, 1, NULL);
    make(dir, cfg, 5, "sh", 3, "f32", m, sizeof m);
    make(dir, cfg, 5, "one", 1, "f32", one, sizeof one);   /* same seed, one file: same values (model.h) */
    /* shard 1 -> a 150-character name, shard 2 -> 240 characters (both > 90, < NAME_MAX 255) */
    char n1[200], n2[300];
    memset(n1, 'a', 150 - 12); memcpy(n1 + 150 - 12, ".safetensors", 13);
    memset(n2, 'b', 240 - 12); memcpy(n2 + 240 - 12, ".safetensors", 13);
    cr_assert_eq(strlen(n1), 150); cr_assert_eq(strlen(n2), 240);
    snprintf(a, sizeof a, "%s/model-00001-of-00003.safetensors", m);
    snprintf(b, sizeof b, "%s/%s", m, n1);
    cr_assert_eq(rename(a, b), 0);
    snprintf(a, sizeof a, "%s/model-00002-of-00003.safetensors", m);
    snprintf(b, sizeof b, "%s/%s", m, n2);
    cr_assert_eq(rename(a, b), 0);
    index_replace(m, "model-00001-of-00003.safetensors", n1);
    index_replace(m, "model-00002-of-00003.safetensors", n2);
    /* a decoy under n1's first 90 characters (the old "%.90s" cut): a copy of shard 3, which must
     * not be opened in n1's place */
    char decoy[100], cmd[1600];
    snprintf(decoy, sizeof decoy, "%.90s", n1);
    snprintf(cmd, sizeof cmd, "cp '%s/model-00003-of-00003.safetensors' '%s/%s'", m, m, decoy);
    cr_assert_eq(system(cmd), 0);
    ae_model *ms = load_ok(m), *m1 = load_ok(one);
    /* every tensor equals the unsharded checkpoint of the same seed */
    size_t D = 8, H = 16, V = 16;
    struct { int l; ae_tensor_id id; size_t n; } cmp[] = {
        {-1, AE_T_EMB, V * D}, {0, AE_T_WQ, D * D}, {1, AE_T_WQ, D * D}, {0, AE_T_DOWN, D * H}, {1, AE_T_DOWN, D * H},
        {-1, AE_T_FINAL_NORM, D}};
    for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
        float *a1 = rd(ms, cmp[i].l, cmp[i].id), *b1 = rd(m1, cmp[i].l, cmp[i].id);
        cr_assert_eq(memcmp(a1, b1, cmp[i].n * 4), 0, "tensor %zu", i);
        free(a1); free(b1);
    }
    ae_model_free(ms);
    ae_model_free(m1);
    rm_tree(dir);
}

Test(model_load, index_entries_that_escape_the_folder_or_lie_are_named) {
    char dir[64], cfg[128], m[256], p[512];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    write_config(cfg, 8, 16, 1, 16, 1, NULL);
    make(dir, cfg, 5, "sh", 2, "f16", m, sizeof m);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", m);
    const char *bad[][2] = {
        {"{\"weight_map\":{\"model.norm.weight\":\"..\"}}", "weight_map[\"model.norm.weight\"] = \"..\" is not a file name"},
        {"{\"weight_map\":{\"model.norm.weight\":\".\"}}", "is not a file name"},
        {"{\"weight_map\":{\"model.norm.weight\":\"\"}}", "is not a file name"},
        {"{\"weight_map\":{\"model.norm.weight\":\"sub/x.safetensors\"}}", "is not a file name"},
        {"{\"weight_map\":{\"model.norm.weight\":\"/etc/passwd\"}}", "is not a file name"},
        {"{\"weight_map\":{\"model.norm.weight\":\"x.safetensors\\u0000/../../etc/passwd\"}}", "\\u0000"},
        {"{\"weight_map\":{\"model.norm.weight\":3}}", "weight_map[\"model.norm.weight\"] must be a shard file name (a string), got a number"},
        {"{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}", "duplicate key \"a\""},
        {"{\"weight_map\":{\"a\":\"x\"}} []", "trailing data"},
        {"{\"weight_map\":[]}", "\"weight_map\" must be a non-empty object"},
        {"{\"weight_map\":{}}", "an empty object"},
        {"{\"metadata\":[],\"weight_map\":{\"a\":\"x\"}}", "\"metadata\" must be an object, got an array"},
        {"{}", "\"weight_map\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(p, bad[i][0]);
        ae_model *mm = NULL;
        char err[AX_ERR_LEN] = "";
        cr_assert_neq(ae_model_load(m, &mm, err), 0, "%s should be rejected", bad[i][0]);
        cr_assert_not_null(strstr(err, bad[i][1]), "%s: error '%s' should mention '%s'", bad[i][0], err, bad[i][1]);
        cr_assert_not_null(strstr(err, "model.safetensors.index.json"), "error '%s' should name the index", err);
        /* the index on its own, as a fuzz harness calls it */
        ae_st_index *x = NULL;
        cr_assert_neq(ae_st_index_load(p, &x, err), 0);
        cr_assert_null(x);
    }
    rm_tree(dir);
}

/* The index on its own (the fuzz entry point): shard names numbered in order of first use,
 * lookups by tensor name; expectations by hand from the JSON text. */
Test(safetensors, index_lists_shards_in_first_use_order) {
    char dir[64], p[128], err[AX_ERR_LEN] = "";
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"metadata\":{\"total_size\":64},\"weight_map\":{\"b\":\"s2\",\"a\":\"s1\",\"c\":\"s2\","
                  "\"d\":\"s1\",\"e\":\"s3\"}}\n");
    ae_st_index *x = NULL;
    cr_assert_eq(ae_st_index_load(p, &x, err), 0, "%s", err);
    cr_assert_eq(x->n, 5);
    cr_assert_eq(x->n_files, 3);
    cr_assert_str_eq(x->files[0], "s2"); cr_assert_str_eq(x->files[1], "s1"); cr_assert_str_eq(x->files[2], "s3");
    cr_assert_str_eq(ae_st_index_file(x, "a"), "s1");
    cr_assert_str_eq(ae_st_index_file(x, "b"), "s2");
    cr_assert_str_eq(ae_st_index_file(x, "c"), "s2");
    cr_assert_str_eq(ae_st_index_file(x, "d"), "s1");
    cr_assert_str_eq(ae_st_index_file(x, "e"), "s3");
    cr_assert_null(ae_st_index_file(x, "f"));
    cr_assert_null(ae_st_index_file(x, ""));
    ae_st_index_free(x);
    cr_assert_neq(ae_st_index_load("", &x, err), 0);
    cr_assert(strstr(err, "empty path"), "%s", err);
    rm_tree(dir);
}

/* ---- the model folder itself ------------------------------------------------------------------ */

Test(model_load, empty_missing_and_non_folder_model_paths) {
    expect_load_error("", "--model: empty path", NULL);
    expect_load_error("/nonexistent-apex4-model", "/nonexistent-apex4-model", "does not exist");
    char dir[64], f[128];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(f, sizeof f, "%s/file", dir);
    write_text(f, "x");
    expect_load_error(f, f, "not a folder");
    rm_tree(dir);
    char err[AX_ERR_LEN] = "";
    ae_config c;
    cr_assert_neq(ae_config_load("", &c, err), 0);
    cr_assert(strstr(err, "empty path"), "%s", err);
    cr_assert_neq(ae_make_model("/nonexistent.json", 1, "", 1, err), 0);
    cr_assert(strstr(err, "--out: empty path"), "%s", err);
}

/* ---- CLI options: range-checked numbers, empty paths, tokenizer/model mismatch ------------------ */

static int run_capture(const char *cmd, char *out, size_t len) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* exit 2 and every needle in the combined output */
static void expect_cli(const char *cmd, const char *n1, const char *n2) {
    char out[8192];
    cr_assert_eq(run_capture(cmd, out, sizeof out), 2, "%s -> %s", cmd, out);
    cr_assert_not_null(strstr(out, n1), "%s: output '%s' should mention '%s'", cmd, out, n1);
    if (n2) cr_assert_not_null(strstr(out, n2), "%s: output '%s' should mention '%s'", cmd, out, n2);
}

Test(make_model_cli, numbers_and_paths_are_checked_naming_the_option) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) { cr_skip_test("skipped: APEX4_BIN not set (run through make test)"); return; }
    char dir[64], cfg[128], cmd[1024];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    write_config(cfg, 8, 16, 1, 16, 1, NULL);
    const char *cases[][3] = {
        {"--seed 1 --shards 1e3", "--shards: expected an integer in [1, 99999], got '1e3'", NULL},
        {"--seed 1 --shards 0", "--shards", "got '0'"},
        {"--seed 1 --shards 100000", "--shards", "got '100000'"},
        {"--seed -1", "--seed: expected an unsigned 64-bit integer", "'-1'"},
        {"--seed 1e20", "--seed", "'1e20'"},
        {"--seed 18446744073709551616", "--seed", NULL},   /* 2^64 */
        {"--seed ''", "--seed", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s' make-model --config '%s' --out '%s/m' %s 2>&1", bin, cfg, dir, cases[i][0]);
        expect_cli(cmd, cases[i][1], cases[i][2]);
    }
    snprintf(cmd, sizeof cmd, "'%s' make-model --config '%s' --out '' --seed 1 2>&1", bin, cfg);
    expect_cli(cmd, "--out: empty path", NULL);
    snprintf(cmd, sizeof cmd, "'%s' make-model --config '' --out '%s/m' --seed 1 2>&1", bin, dir);
    expect_cli(cmd, "--config: empty path", NULL);
    /* 2^64 - 1 is a valid seed */
    snprintf(cmd, sizeof cmd, "'%s' make-model --config '%s' --out '%s/m' --seed 18446744073709551615 >/dev/null 2>&1",
             bin, cfg, dir);
    cr_assert_eq(run_status(cmd), 0);
    rm_tree(dir);
}

Test(generate_cli, options_paths_and_tokenizer_mismatch) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) { cr_skip_test("skipped: APEX4_BIN not set (run through make test)"); return; }
    char dir[64], cfg[128], m[256], cmd[3 * AX_PATH_LEN];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    write_config(cfg, 8, 16, 1, 16, 1, NULL);
    make(dir, cfg, 5, "m", 1, "f32", m, sizeof m);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '' 2>&1", bin);
    expect_cli(cmd, "--model: empty path", NULL);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s/none' 2>&1", bin, dir);
    expect_cli(cmd, "/none", "does not exist");
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' -n 1e20 2>&1", bin, m);
    expect_cli(cmd, "-n: expected an integer in [0, 16777216], got '1e20'", NULL);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' -n -1 2>&1", bin, m);
    expect_cli(cmd, "-n: expected an integer", NULL);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --threads 0 2>&1", bin, m);
    expect_cli(cmd, "--threads: expected an integer in [1, 1024], got '0'", NULL);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --threads 4x 2>&1", bin, m);
    expect_cli(cmd, "--threads", "'4x'");
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --tokenizer '' 2>&1", bin, m);
    expect_cli(cmd, "--tokenizer: empty path", NULL);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --calib-dir '%s/nonexistent-dir' 2>&1", bin, m, dir);
    expect_cli(cmd, "--calib-dir", "nonexistent-dir");
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --calib-dir '' 2>&1", bin, m);
    expect_cli(cmd, "--calib-dir: empty path", NULL);
    rm_tree(dir);
    /* the LLaMA-2 tokenizer (32,000 pieces, shared/models/MANIFEST.md) with stories260K's
     * 512-token model: rejected as eval ppl / zeroshot reject it, not decoded into garbage */
    char root[AX_PATH_LEN];
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root"); return; }
    char out[8192];
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s/models/stories260K' --tokenizer "
             "'%s/models/llama2-tokenizer/tokenizer.json' -n 4 --threads 1 2>&1", bin, root, root);
    expect_cli(cmd, "llama2-tokenizer/tokenizer.json", "32000 tokens, more than the vocab_size 512");
    /* its own tokenizer still works */
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s/models/stories260K' --prompt 'Once' -n 4 --threads 1 2>&1",
             bin, root);
    cr_assert_eq(run_capture(cmd, out, sizeof out), 0, "%s", out);
}

/* ==== lazy access (issue "Lazy model access") ===================================================== */

static const ae_tensor_id all_ids[AE_T_COUNT] = {AE_T_EMB, AE_T_FINAL_NORM, AE_T_LM_HEAD, AE_T_ATTN_NORM, AE_T_WQ,
                                                 AE_T_WK, AE_T_WV, AE_T_WO, AE_T_FFN_NORM, AE_T_GATE, AE_T_UP,
                                                 AE_T_DOWN};
static int layer_of(ae_tensor_id id, int l) { return id <= AE_T_LM_HEAD ? -1 : l; }

/* Row ranges against the full read, for f32/bf16/f16 files: every range of a few shapes equals
 * the slice of the full read (f32 and f16 reads); the f16 read is the RNE rounding of the f32
 * read (F32/BF16 files) or widens to it exactly (F16 files); a tensor big enough to be read on
 * several threads (4096 x 128 embedding) equals the row-by-row reads (one thread each). */
Test(model_read, row_ranges_equal_slices_of_the_full_read) {
    char dir[64], cfg[128], out[256], err[AX_ERR_LEN] = "";
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    write_config(cfg, 128, 256, 2, 4096, 0, NULL);
    const char *dts[3] = {"f32", "bf16", "f16"};
    for (int d = 0; d < 3; d++) {
        make(dir, cfg, 11, dts[d], 1, dts[d], out, sizeof out);
        ae_model *m = load_ok(out);
        for (int l = 0; l < 2; l++)
            for (int k = 0; k < AE_T_COUNT; k++) {
                ae_tensor_id id = all_ids[k];
                if (l == 1 && id <= AE_T_LM_HEAD) continue;
                size_t R, C;
                char nm[96];
                cr_assert_eq(ae_model_tensor_shape(m, layer_of(id, l), id, &R, &C, nm, err), 0, "%s", err);
                float *full = malloc(R * C * 4), *part = malloc(R * C * 4);
                uint16_t *f16 = malloc(R * C * 2), *p16 = malloc(R * C * 2);
                cr_assert_eq(ae_model_read_f32(m, layer_of(id, l), id, 0, R, full, err), 0, "%s", err);
                cr_assert_eq(ae_model_read_f16(m, layer_of(id, l), id, 0, R, f16, err), 0, "%s", err);
                for (size_t i = 0; i < R * C; i++) {
                    if (d == 2) cr_assert_eq(aq_f16_to_f32(f16[i]), full[i], "%s %s [%zu]", dts[d], nm, i);
                    else cr_assert_eq(f16[i], aq_f32_to_f16(full[i]), "%s %s [%zu]", dts[d], nm, i);
                }
                size_t r0s[] = {0, R / 3, R - 1, R / 2, 0}, nrs[] = {R, R / 2 + 1, 1, 0, 1};
                for (int j = 0; j < 5; j++) {
                    size_t r0 = r0s[j], nr = nrs[j];
                    cr_assert_eq(ae_model_read_f32(m, layer_of(id, l), id, r0, nr, part, err), 0, "%s", err);
                    cr_assert_eq(memcmp(part, full + r0 * C, nr * C * 4), 0, "%s %s rows %zu+%zu", dts[d], nm, r0, nr);
                    cr_assert_eq(ae_model_read_f16(m, layer_of(id, l), id, r0, nr, p16, err), 0, "%s", err);
                    cr_assert_eq(memcmp(p16, f16 + r0 * C, nr * C * 2), 0, "%s %s rows %zu+%zu", dts[d], nm, r0, nr);
                }
                if (id == AE_T_EMB) {   /* 524,288 values: split over threads vs one row at a time */
                    for (size_t r = 0; r < R; r++)
                        cr_assert_eq(ae_model_read_f32(m, -1, id, r, 1, part + r * C, err), 0, "%s", err);
                    cr_assert_eq(memcmp(part, full, R * C * 4), 0);
                }
                /* past the end */
                cr_assert_neq(ae_model_read_f32(m, layer_of(id, l), id, R - 1, 2, part, err), 0);
                cr_assert(strstr(err, nm) && strstr(err, "outside its"), "%s", err);
                cr_assert_neq(ae_model_read_f16(m, layer_of(id, l), id, R + 1, 0, p16, err), 0);
                free(full); free(part); free(f16); free(p16);
            }
        /* bad addresses */
        float x[256];
        cr_assert_neq(ae_model_read_f32(m, 0, AE_T_EMB, 0, 1, x, err), 0);
        cr_assert(strstr(err, "global tensor (layer -1)"), "%s", err);
        cr_assert_neq(ae_model_read_f32(m, 2, AE_T_WQ, 0, 1, x, err), 0);
        cr_assert(strstr(err, "layer 2") && strstr(err, "[0, 2)"), "%s", err);
        cr_assert_neq(ae_model_read_f32(m, -1, AE_T_WQ, 0, 1, x, err), 0);
        cr_assert_neq(ae_model_read_f32(m, -1, AE_T_COUNT, 0, 1, x, err), 0);
        cr_assert(strstr(err, "tensor id"), "%s", err);
        cr_assert_neq(ae_model_tensor_shape(m, 0, (ae_tensor_id)-1, NULL, NULL, NULL, err), 0);
        /* shapes by hand: q_proj [4 heads * 32, 128], down [128, 256], norms 1 x 128 */
        size_t R, C;
        cr_assert_eq(ae_model_tensor_shape(m, 1, AE_T_DOWN, &R, &C, NULL, err), 0);
        cr_assert(R == 128 && C == 256);
        cr_assert_eq(ae_model_tensor_shape(m, 1, AE_T_WK, &R, &C, NULL, err), 0);
        cr_assert(R == 64 && C == 128, "2 KV heads of 32");
        cr_assert_eq(ae_model_tensor_shape(m, 0, AE_T_FFN_NORM, &R, &C, NULL, err), 0);
        cr_assert(R == 1 && C == 128);
        uint64_t ts; double sd; float cst;
        cr_assert_eq(ae_model_virtual_params(m, 0, AE_T_WQ, &ts, &sd, &cst, err), 0, "file-backed: 0");
        ae_model_free(m);
    }
    rm_tree(dir);
}

/* An F32 weight of 70000 (> 65504, the largest fp16) reads as fp32 and is refused as fp16 with
 * the file, the tensor, the value and the index named. */
Test(model_read, f16_read_refuses_values_that_overflow_fp16) {
    char dir[64], m[256], p[512], err[AX_ERR_LEN];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    tiny(dir, 1, m, sizeof m);
    snprintf(p, sizeof p, "%s/model.safetensors", m);
    ae_st_file *f = NULL;
    cr_assert_eq(ae_st_open(p, &f, err), 0, "%s", err);
    const ae_st_tensor *t = ae_st_find(f, "model.layers.0.self_attn.o_proj.weight");
    cr_assert_not_null(t);
    long off = (long)(f->data_off + t->begin + 4 * 9);   /* flat index 9 = row 1, col 1 of [8, 8] */
    ae_st_close(f);
    FILE *fp = fopen(p, "r+b");
    cr_assert_not_null(fp);
    fseek(fp, off, SEEK_SET);
    const float big = 70000.0f;
    fwrite(&big, 4, 1, fp);   /* little-endian host, as the file */
    fclose(fp);
    ae_model *mm = load_ok(m);
    float x[64];
    uint16_t h[64];
    cr_assert_eq(ae_model_read_f32(mm, 0, AE_T_WO, 0, 8, x, err), 0, "%s", err);
    cr_assert_eq(x[9], 70000.0f);
    cr_assert_neq(ae_model_read_f16(mm, 0, AE_T_WO, 0, 8, h, err), 0);
    const char *want[] = {p, "'model.layers.0.self_attn.o_proj.weight'", "70000", "flat index 9", "overflows fp16"};
    for (int i = 0; i < 5; i++) cr_assert_not_null(strstr(err, want[i]), "'%s' should mention '%s'", err, want[i]);
    cr_assert_eq(ae_model_read_f16(mm, 0, AE_T_WO, 2, 6, h, err), 0, "rows 2..7 are fine: %s", err);
    ae_model_free(mm);
    rm_tree(dir);
}

/* Fingerprints (calibration cache key) follow the bytes: the same seed in another folder or in 3
 * shards gives the same value, another seed or dtype another; virtual models hash config + seed. */
Test(model_load, fingerprint_follows_the_weights) {
    char dir[64], cfg[128], a[256], b[256], c[256], d[256], e[256], err[AX_ERR_LEN] = "";
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    write_config(cfg, 8, 16, 2, 16, 1, NULL);
    make(dir, cfg, 5, "a", 1, "f16", a, sizeof a);
    make(dir, cfg, 5, "b", 3, "f16", b, sizeof b);
    make(dir, cfg, 6, "c", 1, "f16", c, sizeof c);
    make(dir, cfg, 5, "d", 1, "f32", d, sizeof d);
    ae_model *ma = load_ok(a), *mb = load_ok(b), *mc = load_ok(c), *md = load_ok(d);
    cr_assert_eq(ae_model_fingerprint(ma), ae_model_fingerprint(mb));
    cr_assert_neq(ae_model_fingerprint(ma), ae_model_fingerprint(mc));
    cr_assert_neq(ae_model_fingerprint(ma), ae_model_fingerprint(md));
    snprintf(e, sizeof e, "random:%s,seed=5", cfg);
    ae_model *v1 = load_ok(e), *v2 = load_ok(e);
    snprintf(e, sizeof e, "random:%s,seed=6", cfg);
    ae_model *v3 = load_ok(e);
    cr_assert_eq(ae_model_fingerprint(v1), ae_model_fingerprint(v2));
    cr_assert_neq(ae_model_fingerprint(v1), ae_model_fingerprint(v3));
    cr_assert_neq(ae_model_fingerprint(v1), ae_model_fingerprint(ma));
    ae_model_free(ma); ae_model_free(mb); ae_model_free(mc); ae_model_free(md);
    ae_model_free(v1); ae_model_free(v2); ae_model_free(v3);
    (void)err;
    rm_tree(dir);
}

/* ==== seeded virtual checkpoints (issue "Seeded virtual checkpoints") ============================== */

/* random:<config.json>,seed=S and `make-model --seed S --dtype f16` of that config: every tensor
 * byte-identical as fp16 and as fp32, untied and tied, also through random:<folder> and with
 * the default seed; the config read is the file's. */
/* Every tensor of mf and mv byte-identical as fp16 and fp32 reads (and a 3-row range of mv equal to
 * the slice of its full read); returns the number of values compared. */
static long same_tensors(const ae_model *mf, const ae_model *mv) {
    char err[AX_ERR_LEN] = "";
    long n = 0;
    for (int l = 0; l < mf->cfg.n_layers; l++)
        for (int k = 0; k < AE_T_COUNT; k++) {
            ae_tensor_id id = all_ids[k];
            if (l > 0 && id <= AE_T_LM_HEAD) continue;
            size_t R, C, R2, C2;
            char n1[96], n2[96];
            cr_assert_eq(ae_model_tensor_shape(mf, layer_of(id, l), id, &R, &C, n1, err), 0, "%s", err);
            cr_assert_eq(ae_model_tensor_shape(mv, layer_of(id, l), id, &R2, &C2, n2, err), 0, "%s", err);
            cr_assert(R == R2 && C == C2);
            cr_assert_str_eq(n1, n2);
            uint16_t *a16 = malloc(R * C * 2), *b16 = malloc(R * C * 2);
            float *a32 = malloc(R * C * 4), *b32 = malloc(R * C * 4);
            cr_assert_eq(ae_model_read_f16(mf, layer_of(id, l), id, 0, R, a16, err), 0, "%s", err);
            cr_assert_eq(ae_model_read_f16(mv, layer_of(id, l), id, 0, R, b16, err), 0, "%s", err);
            cr_assert_eq(memcmp(a16, b16, R * C * 2), 0, "%s: fp16 bytes differ", n1);
            cr_assert_eq(ae_model_read_f32(mf, layer_of(id, l), id, 0, R, a32, err), 0, "%s", err);
            cr_assert_eq(ae_model_read_f32(mv, layer_of(id, l), id, 0, R, b32, err), 0, "%s", err);
            cr_assert_eq(memcmp(a32, b32, R * C * 4), 0, "%s: fp32 bytes differ", n1);
            /* a row range of the virtual model is the slice of its full read */
            if (R > 3) {
                cr_assert_eq(ae_model_read_f16(mv, layer_of(id, l), id, R / 2, 3, b16, err), 0, "%s", err);
                cr_assert_eq(memcmp(b16, a16 + R / 2 * C, 3 * C * 2), 0, "%s", n1);
            }
            n += (long)(R * C);
            free(a16); free(b16); free(a32); free(b32);
        }
    return n;
}

Test(model_virtual, equals_the_make_model_checkpoint_byte_for_byte) {
    char dir[64], cfg[128], out[256], spec[400];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    const uint64_t S = 0xDEADBEEF12345ull;
    for (int tie = 0; tie < 3; tie++) {
        write_config(cfg, 64, 96, 2, 100, tie == 1, NULL);   /* 100 x 64: odd pair boundaries per row */
        uint64_t seed = tie == 2 ? AE_MODEL_DEFAULT_SEED : S;
        make(dir, cfg, seed, tie ? "tied" : "untied", 1, "f16", out, sizeof out);
        if (tie == 2) snprintf(spec, sizeof spec, "random:%s", out);   /* the folder, default seed */
        else snprintf(spec, sizeof spec, "random:%s,seed=%llu", cfg, (unsigned long long)S);
        ae_model *mf = load_ok(out), *mv = load_ok(spec);
        cr_assert_str_eq(mv->dtype, "F16");
        cr_assert_str_eq(mv->dir, spec);
        cr_assert_eq(memcmp(&mf->cfg, &mv->cfg, sizeof mf->cfg), 0, "same config");
        long n = same_tensors(mf, mv);
        cr_assert_gt(n, 100 * 64);
        ae_model_free(mf);
        ae_model_free(mv);
    }
    rm_tree(dir);
}

/* FNV-1a 64 from its definition, with make-model's offset basis 1469598103934665603 (model.h: one
 * digit short of the standard 14695981039346656037, kept so that checkpoints keep their values) */
static uint64_t fnv1a_test(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ull; }
    return h;
}

/* The generator from its documented formula (model.h ae_gen_normal), written here with testutil's
 * splitmix64: value k of tensor T = fp16(float(0.02 sqrt(-2 ln u1) cos|sin(2π u2))), u1, u2 the
 * first two 53-bit uniforms in (0, 1] of state seed ^ FNV-1a(T) + 2 (k/2) γ; norms 1. Checked on
 * the tiny preset (2 layers, 64 wide) and one row of llama2-70b's layer 79 (no weight is
 * allocated for the rest of a 70B model). ae_model_virtual_params gives the same seed and std. */
Test(model_virtual, generator_follows_its_documented_formula) {
    char err[AX_ERR_LEN] = "";
    const char *specs[2] = {"random:tiny,seed=42", "random:llama2-70b,seed=0x2a"};
    for (int sp = 0; sp < 2; sp++) {
        ae_model *m = load_ok(specs[sp]);
        int L = m->cfg.n_layers - 1;
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.weight", L);
        uint64_t ts = 0, want_ts = 42ull ^ fnv1a_test(name);
        double sd = 0;
        float cst = -1;
        cr_assert_eq(ae_model_virtual_params(m, L, AE_T_WV, &ts, &sd, &cst, err), 1, "%s", err);
        cr_assert_eq(ts, want_ts);
        cr_assert_eq(sd, 0.02);
        cr_assert_eq(ae_model_virtual_params(m, L, AE_T_FFN_NORM, &ts, &sd, &cst, err), 1);
        cr_assert(sd == 0 && cst == 1.0f);
        size_t R, C;
        cr_assert_eq(ae_model_tensor_shape(m, L, AE_T_WV, &R, &C, NULL, err), 0);
        size_t row = R - 1;
        uint16_t *got = malloc(C * 2);
        cr_assert_eq(ae_model_read_f16(m, L, AE_T_WV, row, 1, got, err), 0, "%s", err);
        for (size_t c = 0; c < C; c++) {
            size_t k = row * C + c, p = k / 2;
            uint64_t st = want_ts + (uint64_t)(2 * p) * 0x9e3779b97f4a7c15ull;
            double u1 = ((double)(tu_rand_u64(&st) >> 11) + 1.0) * 0x1p-53;
            double u2 = ((double)(tu_rand_u64(&st) >> 11) + 1.0) * 0x1p-53;
            double r = sqrt(-2.0 * log(u1)), th = 6.283185307179586476925286766559 * u2;
            float v = (float)(0.02 * r * (k % 2 ? sin(th) : cos(th)));
            cr_assert_eq(got[c], aq_f32_to_f16(v), "%s k=%zu", specs[sp], k);
        }
        free(got);
        float one[8192];
        cr_assert_eq(ae_model_read_f32(m, L, AE_T_ATTN_NORM, 0, 1, one, err), 0, "%s", err);
        for (int i = 0; i < m->cfg.dim; i++) cr_assert_eq(one[i], 1.0f);
        ae_model_free(m);
    }
}

/* The presets carry the Hugging Face configs (values from the hub's config.json files, by hand). */
Test(model_virtual, presets_have_the_hugging_face_shapes) {
    struct { const char *spec; int dim, hid, layers, heads, kv, vocab, maxpos; float theta; } P[] = {
        {"random:llama2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f},
        {"random:llama2-13b", 5120, 13824, 40, 40, 40, 32000, 4096, 10000.0f},
        {"random:llama2-70b", 8192, 28672, 80, 64, 8, 32000, 4096, 10000.0f},
        {"random:llama3-8b,seed=3", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0f},
    };
    char err[AX_ERR_LEN] = "";
    for (size_t i = 0; i < sizeof P / sizeof P[0]; i++) {
        ae_model *m = load_ok(P[i].spec);
        const ae_config *c = &m->cfg;
        cr_assert(c->dim == P[i].dim && c->hidden_dim == P[i].hid && c->n_layers == P[i].layers &&
                  c->n_heads == P[i].heads && c->n_kv_heads == P[i].kv && c->vocab_size == P[i].vocab &&
                  c->max_pos == P[i].maxpos && c->rope_theta == P[i].theta, "%s", P[i].spec);
        cr_assert(c->rms_eps == 1e-5f && !c->tie_embeddings && !c->rope_llama3 && c->head_dim == 128, "%s", P[i].spec);
        cr_assert_str_eq(m->dtype, "F16");
        size_t R, C;
        cr_assert_eq(ae_model_tensor_shape(m, c->n_layers - 1, AE_T_WK, &R, &C, NULL, err), 0);
        cr_assert(R == (size_t)P[i].kv * 128 && C == (size_t)P[i].dim);
        ae_model_free(m);
    }
    ae_model *m = load_ok("random:llama3-8b");
    cr_assert(m->cfg.bos_id == 128000 && m->cfg.eos_id == 128001);
    ae_model_free(m);
}

/* Bad specs: every message names --model and what is wrong. */
Test(model_virtual, bad_specs_are_refused_naming_model) {
    char dir[64], cfg[128], bad[256], spec[400];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    write_text(bad, "{\"hidden_size\": 64}");
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    write_config(cfg, 8, 16, 1, 16, 1, NULL);
    const char *cases[][2] = {
        {"random:", "give a preset"},
        {"random:,seed=1", "give a preset"},
        {"random:nope", "'nope' is neither a preset (llama2-7b"},
        {"random:llama2-7b,seed=x", "seed=: expected an unsigned 64-bit integer"},
        {"random:llama2-7b,seed=", "seed=: expected an unsigned 64-bit integer"},
        {"random:llama2-7b,seed=-1", "seed="},
        {"random:llama2-7b,seed=18446744073709551616", "seed=: expected an unsigned 64-bit integer"},   /* 2^64 */
        {"random:llama2-7b,seed=1,seed=2", "seed= given twice"},
        {"random:llama2-7b,layers=2", "unknown option 'layers=2'"},
        {"random:llama2-7b,", "unknown option ''"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_load_error(cases[i][0], "--model", cases[i][1]);
        expect_load_error(cases[i][0], cases[i][0], NULL);
    }
    snprintf(spec, sizeof spec, "random:%s", bad);
    expect_load_error(spec, "--model", "\"intermediate_size\" is missing");
    expect_load_error(spec, bad, NULL);
    snprintf(spec, sizeof spec, "random:%s/none.json,seed=1", dir);
    expect_load_error(spec, "--model", "is neither a preset");
    /* 2^64 - 1 is a seed */
    snprintf(spec, sizeof spec, "random:%s,seed=18446744073709551615", cfg);
    ae_model *m = load_ok(spec);
    ae_model_free(m);
    rm_tree(dir);
}

/* make-model --config <preset> writes the checkpoint random:<preset> generates (2 shards). */
Test(model_virtual, make_model_of_a_preset_equals_the_virtual_model) {
    char dir[64], out[256], err[AX_ERR_LEN] = "";
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(out, sizeof out, "%s/tiny", dir);
    cr_assert_eq(ae_make_model_ex("tiny", 9, out, 2, "f16", err), 0, "%s", err);
    ae_model *mf = load_ok(out), *mv = load_ok("random:tiny,seed=9");
    cr_assert_eq(memcmp(&mf->cfg, &mv->cfg, sizeof mf->cfg), 0);
    cr_assert_gt(same_tensors(mf, mv), 2 * 64 * 256);
    ae_model_free(mf);
    ae_model_free(mv);
    rm_tree(dir);
}
