/* fuzz_targets.h — one entry point per parser of hostile input, shared by the libFuzzer harnesses
 * (tests/fuzz/fuzz_<name>.c, built by `make fuzz`) and the regression test tests/test_fuzz_replay.c
 * (plain `make test`, gcc), so that both feed bytes through exactly the library function the
 * program calls on a file:
 *
 *   name             library call (what the program calls it from)             input bytes are
 *   config           ae_config_load                (make-model, model load)    config.json
 *   safetensors      ae_st_open + ae_st_read_f32 of every tensor, then
 *                    ae_model_load on a folder with a fixed tiny config.json,  model.safetensors
 *                    then ae_model_read_f32 of every tensor
 *   model_index      ae_model_load on a 2-shard tiny checkpoint                model.safetensors.index.json
 *   tokenizer        ae_tokenizer_load (+ ae_tokenize / ae_detokenize of a
 *                    fixed text when it loads)      (ppl, zeroshot, tokenize)  tokenizer.json
 *   tokenize         ae_tokenize + ae_detokenize with the LLaMA-2 tokenizer of
 *                    the data root                  (apex4 tokenize --file)    UTF-8 text
 *   h5case           aq_case_read_inputs (atom-g128-o128) and aq_case_compare
 *                    against a fixed case           (apex4 gemm --in/--compare) HDF5 case file
 *   wikitext         ad_wikitext_load("test") with APEX4_DATA = a tmp root     wiki.test.raw
 *   piqa             ad_zs_load(piqa)               (apex4 zeroshot)           valid.jsonl NUL valid-labels.lst
 *   arc              ad_zs_load(arc_easy)                                      ARC-Easy-Test.jsonl
 *   boolq            ad_zs_load(boolq)                                         dev.jsonl
 *   hellaswag_txt    ad_zs_load(hellaswag), llama.cpp text format (no jsonl)   hellaswag_val_full.txt
 *   hellaswag_jsonl  ad_zs_load(hellaswag), original jsonl (preferred file)    hellaswag_val.jsonl
 *   winogrande       ad_zs_load(winogrande)                                    dev.jsonl NUL dev-labels.lst
 *   lambada          ad_zs_load(lambada_openai)                                lambada_test.jsonl
 *   mode             aq_mode_parse                  (every --mode option)      the mode string
 *
 * "A NUL B": the bytes before the first NUL byte are the data file, the rest the labels file (no NUL:
 * an empty labels file). Dataset loaders with a `limit`: inputs whose length is a multiple of 3 are
 * loaded with limit 1 (the --limit path), others with limit 0.
 *
 * Each fz_<name>(data, size) returns 1 when the library accepted the input, 0 when it rejected it
 * with an error message (both are fine), and -1 when the harness itself could not set up (no tmp
 * dir, ...). Anything else the library does wrong shows up as a crash, a sanitizer report (ASan,
 * UBSan, LSan: every object a call returns is freed, so a leak is a leak of the library) or, for
 * h5case, an abort when HDF5 objects are left open after the call. An error message must not be
 * empty: that aborts too (the project's rule is that every error names the file and the field).
 *
 * Files: functions take paths, so each call writes the input to a file first: a memfd
 * ("/proc/self/fd/N", no disk) for the single-file parsers except HDF5 (libhdf5 calls realpath() on
 * the name, which fails on a memfd), else a file in a per-process work folder
 * /dev/shm/apex4-fuzz-XXXXXX (or $TMPDIR, /tmp) created on first use (LLVMFuzzerInitialize), which
 * also holds the tiny data root (data/<task>/...; APEX4_DATA points there, after the real data root
 * was looked up for the tokenize harness), the h5case input and the tiny checkpoints. The folder is
 * removed at exit.
 * State: one lazily created per-process context (fz_env), the only global state, in test code only.
 * All functions are static inline so that a harness that uses one of them compiles warning-free. */
#ifndef APEX4_FUZZ_TARGETS_H
#define APEX4_FUZZ_TARGETS_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "aq.h"
#include "aq_case.h"
#include "ax_util.h"
#include "model.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "wikitext.h"
#include "zeroshot.h"

/* The fixed tiny LLaMA config of the safetensors and model_index harnesses (and of the seeds that
 * tests/fuzz/seeds.c writes): dim 8, 1 layer, 2 heads over 1 KV head (head_dim 4), vocab 32. */
#define FZ_TINY_CONFIG                                                                              \
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":8,"         \
    "\"intermediate_size\":16,\"num_hidden_layers\":1,\"num_attention_heads\":2,"                   \
    "\"num_key_value_heads\":1,\"vocab_size\":32,\"max_position_embeddings\":16,"                   \
    "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"tie_word_embeddings\":false,"                  \
    "\"torch_dtype\":\"float16\",\"bos_token_id\":1,\"eos_token_id\":2}\n"

/* The mode the h5case harness reads cases with (atom: the perm dataset is read and checked too). */
#define FZ_H5_MODE "atom-g128-o128"

typedef struct {
    int           ready;                /* 1 after a successful fz_env_get()                        */
    char          dir[256];             /* per-process work folder                                  */
    char          root[320];            /* dir/root: the tiny data root (APEX4_DATA)                */
    char          model[320];           /* dir/model: tiny config.json + fuzzed model.safetensors   */
    char          sharded[320];         /* dir/sharded: tiny 2-shard checkpoint, fuzzed index       */
    int           sharded_ok;           /* ae_make_model of the 2-shard checkpoint succeeded        */
    int           memfd;                /* single-file inputs                                       */
    char          fdpath[64];           /* "/proc/self/fd/N" (or dir/input when memfd is missing)   */
    char          real_root[AX_PATH_LEN];  /* the data root before APEX4_DATA was redirected ("") */
    ae_tokenizer *tok;                  /* tokenize harness: LLaMA-2 tokenizer (lazily; NULL)      */
    int           tok_tried;
    aq_case       ref;                  /* h5case: the fixed case compared against (lazily)         */
    int           ref_state;            /* 0 not tried, 1 ok, -1 failed                             */
    FILE         *devnull;              /* aq_case_compare's report goes here                       */
} fz_env;

static inline fz_env *fz_env_ptr(void) {
    static fz_env env;
    return &env;
}

static inline int fz_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(p);
    return 0;
}

static inline void fz_env_cleanup(void) {
    fz_env *e = fz_env_ptr();
    if (!e->ready) return;
    e->ready = 0;
    if (e->tok) ae_tokenizer_free(e->tok);
    e->tok = NULL;
    if (e->ref_state == 1) aq_case_free(&e->ref);
    e->ref_state = 0;
    if (e->devnull) fclose(e->devnull);
    e->devnull = NULL;
    if (e->memfd >= 0) close(e->memfd);
    e->memfd = -1;
    if (e->dir[0]) nftw(e->dir, fz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write data [n] into path (created/truncated). 0 or -1. */
static inline int fz_write_file(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { close(fd); return -1; }
        p += w;
        n -= (size_t)w;
    }
    return close(fd);
}

static inline int fz_mkdirs(const char *base, const char *rel) {
    char p[AX_PATH_LEN];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    for (char *s = p + strlen(base) + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) && errno != EEXIST) return -1;
            *s = '/';
        }
    return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

/* The per-process context, created on first use (NULL if the work folder cannot be made). */
static inline fz_env *fz_env_get(void) {
    fz_env *e = fz_env_ptr();
    if (e->ready) return e;
    memset(e, 0, sizeof *e);
    e->memfd = -1;
    char err[AX_ERR_LEN];
    if (ax_data_root(e->real_root, sizeof e->real_root, err)) e->real_root[0] = 0;
    const char *bases[] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    for (int i = 0; i < 3 && !e->dir[0]; i++) {
        if (!bases[i] || !bases[i][0]) continue;
        snprintf(e->dir, sizeof e->dir, "%.200s/apex4-fuzz-XXXXXX", bases[i]);
        if (!mkdtemp(e->dir)) e->dir[0] = 0;
    }
    if (!e->dir[0]) { fprintf(stderr, "fuzz_targets: cannot create a work folder\n"); return NULL; }
    e->ready = 1;
    atexit(fz_env_cleanup);
    snprintf(e->root, sizeof e->root, "%.250s/root", e->dir);
    snprintf(e->model, sizeof e->model, "%.250s/model", e->dir);
    snprintf(e->sharded, sizeof e->sharded, "%.250s/sharded", e->dir);
    static const char *const sub[] = {"root/data/wikitext-2-raw", "root/data/piqa", "root/data/arc_easy",
                                      "root/data/boolq", "root/data/hellaswag", "root/data/winogrande",
                                      "root/data/lambada_openai", "model", NULL};
    for (int i = 0; sub[i]; i++)
        if (fz_mkdirs(e->dir, sub[i])) { fprintf(stderr, "fuzz_targets: cannot create %s/%s\n", e->dir, sub[i]); return NULL; }
    setenv("APEX4_DATA", e->root, 1);   /* ad_wikitext_load reads the data root from here */
    e->memfd = memfd_create("apex4-fuzz", MFD_CLOEXEC);
    if (e->memfd >= 0) snprintf(e->fdpath, sizeof e->fdpath, "/proc/self/fd/%d", e->memfd);
    else snprintf(e->fdpath, sizeof e->fdpath, "%.40s/input", e->dir);
    char p[AX_PATH_LEN];
    snprintf(p, sizeof p, "%.300s/config.json", e->model);
    if (fz_write_file(p, FZ_TINY_CONFIG, strlen(FZ_TINY_CONFIG))) return NULL;
    /* The 2-shard checkpoint: model-0000{1,2}-of-00002.safetensors; its index is rewritten per call. */
    char cfg[AX_PATH_LEN];
    snprintf(cfg, sizeof cfg, "%.250s/tiny_config.json", e->dir);
    if (fz_write_file(cfg, FZ_TINY_CONFIG, strlen(FZ_TINY_CONFIG))) return NULL;
    e->sharded_ok = ae_make_model(cfg, 1, e->sharded, 2, err) == 0;
    if (!e->sharded_ok) fprintf(stderr, "fuzz_targets: tiny 2-shard model: %s\n", err);
    return e;
}

/* Write the input where a single-file parser reads it; returns the path or NULL. */
static inline const char *fz_single(fz_env *e, const uint8_t *d, size_t n) {
    if (e->memfd < 0) return fz_write_file(e->fdpath, d, n) ? NULL : e->fdpath;
    if (ftruncate(e->memfd, 0)) return NULL;
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(e->memfd, d + off, n - off, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return NULL;
        off += (size_t)w;
    }
    return e->fdpath;
}

/* A rejected input must come with a message. */
static inline int fz_rejected(const char *what, const char *err) {
    if (!err[0]) {
        fprintf(stderr, "fuzz_targets: %s returned an error with an empty message\n", what);
        abort();
    }
    return 0;
}

/* ---- model files -------------------------------------------------------------------------------- */
static inline int fz_config(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    const char *path = e ? fz_single(e, d, n) : NULL;
    if (!path) return -1;
    char err[AX_ERR_LEN] = "";
    ae_config cfg;
    if (ae_config_load(path, &cfg, err)) return fz_rejected("ae_config_load", err);
    return 1;
}

static inline int fz_safetensors(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    if (!e) return -1;
    char path[AX_PATH_LEN];
    snprintf(path, sizeof path, "%.300s/model.safetensors", e->model);
    if (fz_write_file(path, d, n)) return -1;
    char err[AX_ERR_LEN] = "";
    ae_st_file *f = NULL;
    int ok = 0;
    if (ae_st_open(path, &f, err)) {
        fz_rejected("ae_st_open", err);
    } else {
        ok = 1;
        for (int i = 0; i < f->n; i++) {
            const ae_st_tensor *t = &f->t[i];
            if (ae_st_find(f, t->name) == NULL) { fprintf(stderr, "ae_st_find lost '%s'\n", t->name); abort(); }
            if (t->numel > ((uint64_t)1 << 24)) continue;   /* the data is in the file: bounded by max_len */
            float *buf = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
            if (!buf) return -1;
            err[0] = 0;
            if (ae_st_read_f32(f, t, buf, err)) { fz_rejected("ae_st_read_f32", err); ok = 0; }
            free(buf);
        }
        ae_st_close(f);
    }
    /* The same file as model.safetensors of a checkpoint folder with the tiny config. */
    ae_model *m = NULL;
    err[0] = 0;
    if (ae_model_load(e->model, &m, err)) fz_rejected("ae_model_load", err);
    else {   /* values are read lazily: read every tensor as the engines do (NaN/inf, fp16 overflow) */
        float *buf = NULL;
        for (int l = -1; l < m->cfg.n_layers; l++)
            for (int id = l < 0 ? AE_T_EMB : AE_T_ATTN_NORM; id <= (l < 0 ? AE_T_LM_HEAD : AE_T_DOWN); id++) {
                size_t rows, cols;
                err[0] = 0;
                if (ae_model_tensor_shape(m, l, (ae_tensor_id)id, &rows, &cols, NULL, err)) { fz_rejected("shape", err); continue; }
                float *nb = realloc(buf, rows * cols * sizeof *buf);
                if (!nb) break;
                buf = nb;
                if (ae_model_read_f32(m, l, (ae_tensor_id)id, 0, rows, buf, err)) fz_rejected("ae_model_read_f32", err);
            }
        free(buf);
        ae_model_free(m);
    }
    return ok;
}

static inline int fz_model_index(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    if (!e || !e->sharded_ok) return -1;
    char path[AX_PATH_LEN];
    snprintf(path, sizeof path, "%.300s/model.safetensors.index.json", e->sharded);
    if (fz_write_file(path, d, n)) return -1;
    char err[AX_ERR_LEN] = "";
    ae_model *m = NULL;
    if (ae_model_load(e->sharded, &m, err)) return fz_rejected("ae_model_load", err);
    ae_model_free(m);
    return 1;
}

/* ---- tokenizer ------------------------------------------------------------------------------------ */
/* Encode and decode text with t; errors are fine (text without a piece, no BOS, ...): 1 encoded,
 * 0 rejected. */
static inline int fz_roundtrip(const ae_tokenizer *t, const char *text, size_t len) {
    char err[AX_ERR_LEN] = "";
    int *ids = NULL;
    size_t nid = 0;
    int bos = ae_tokenizer_bos(t) >= 0;
    if (ae_tokenize(t, text, len, bos, &ids, &nid, err)) return fz_rejected("ae_tokenize", err);
    int nv = ae_tokenizer_vocab_size(t);
    for (size_t i = 0; i < nid; i++) {
        if (ids[i] < 0 || ids[i] >= nv) {
            fprintf(stderr, "ae_tokenize: id %d out of range [0, %d)\n", ids[i], nv);
            abort();
        }
        (void)ae_token_piece(t, ids[i]);
    }
    char *s = ae_detokenize(t, ids, nid);
    free(s);
    free(ids);
    return 1;
}

static inline int fz_tokenizer(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    const char *path = e ? fz_single(e, d, n) : NULL;
    if (!path) return -1;
    char err[AX_ERR_LEN] = "";
    ae_tokenizer *t = NULL;
    if (ae_tokenizer_load(path, &t, err)) return fz_rejected("ae_tokenizer_load", err);
    static const char text[] = "Hello world!  caf\xc3\xa9 \xe2\x96\x81x \xf0\x9f\x98\x80\n\t<s> 123";
    fz_roundtrip(t, text, sizeof text - 1);
    int nv = ae_tokenizer_vocab_size(t);
    int few[8], k = 0;
    for (int i = 0; i < nv && k < 8; i++) few[k++] = i;
    char *s = ae_detokenize(t, few, (size_t)k);
    free(s);
    ae_tokenizer_free(t);
    return 1;
}

/* Text through the LLaMA-2 tokenizer of the real data root; -1 (skipped) without one. */
static inline int fz_tokenize(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    if (!e) return -1;
    if (!e->tok_tried) {
        e->tok_tried = 1;
        char p[AX_PATH_LEN + 64], err[AX_ERR_LEN] = "";
        snprintf(p, sizeof p, "%s/models/llama2-tokenizer/tokenizer.json", e->real_root);
        if (!e->real_root[0] || ae_tokenizer_load(p, &e->tok, err)) {
            fprintf(stderr, "fuzz_targets: tokenize: no LLaMA-2 tokenizer (%s)\n", err[0] ? err : "no data root");
            e->tok = NULL;
        }
    }
    if (!e->tok) return -1;
    return fz_roundtrip(e->tok, (const char *)d, n);
}

/* ---- HDF5 GEMM cases ------------------------------------------------------------------------------ */
static inline void fz_h5_check_closed(const char *what) {
    ssize_t open_ids = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_ids != 0) {
        fprintf(stderr, "fuzz_targets: %s left %zd HDF5 objects open\n", what, open_ids);
        abort();
    }
}

static inline int fz_h5case(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    if (!e) return -1;
    char err[AX_ERR_LEN] = "";
    if (e->ref_state == 0) {   /* the fixed case of the --compare path: w4a4-g128, M=2, N=3, K=128 */
        aq_mode m;
        e->ref_state = -1;
        if (!aq_mode_parse("w4a4-g128", &m, err) && !aq_case_random(&m, 2, 3, 128, 1, 7, "normal", 0, &e->ref, err)) {
            if (aq_case_run(&e->ref, 1, err)) aq_case_free(&e->ref);
            else e->ref_state = 1;
        }
        if (e->ref_state != 1) fprintf(stderr, "fuzz_targets: h5case reference: %s\n", err);
        e->devnull = fopen("/dev/null", "w");
    }
    if (e->ref_state != 1 || !e->devnull) return -1;
    /* Not the memfd: HDF5 resolves the path with realpath(), which fails on "/memfd:... (deleted)". */
    char path[AX_PATH_LEN];
    snprintf(path, sizeof path, "%.300s/case.h5", e->dir);
    if (fz_write_file(path, d, n)) return -1;
    aq_mode mode;
    if (aq_mode_parse(FZ_H5_MODE, &mode, err)) return -1;
    aq_case c;
    int ok = 1;
    err[0] = 0;
    if (aq_case_read_inputs(path, &mode, 1, &c, err)) { fz_rejected("aq_case_read_inputs", err); ok = 0; }
    else aq_case_free(&c);
    fz_h5_check_closed("aq_case_read_inputs");
    long nd = 0;
    err[0] = 0;
    if (aq_case_compare(&e->ref, path, NULL, e->devnull, &nd, err)) { fz_rejected("aq_case_compare", err); ok = 0; }
    fz_h5_check_closed("aq_case_compare");
    return ok;
}

/* ---- datasets -------------------------------------------------------------------------------------- */
static inline int fz_wikitext(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    if (!e) return -1;
    char path[AX_PATH_LEN];
    snprintf(path, sizeof path, "%.300s/data/wikitext-2-raw/wiki.test.raw", e->root);
    if (fz_write_file(path, d, n)) return -1;
    setenv("APEX4_DATA", e->root, 1);
    char err[AX_ERR_LEN] = "";
    ad_text t;
    if (ad_wikitext_load("test", &t, err)) return fz_rejected("ad_wikitext_load", err);
    if (t.len != strlen(t.text)) { fprintf(stderr, "ad_wikitext_load: len %zu != strlen\n", t.len); abort(); }
    ad_text_free(&t);
    return 1;
}

/* Write the task's files (main file; labels after the first NUL when the task has a labels file)
 * and load it with ad_zs_load. */
static inline int fz_zs(const char *task, const char *file, const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    if (!e) return -1;
    const ad_zs_task *t = ad_zs_task_find(task);
    if (!t) return -1;
    char path[AX_PATH_LEN];
    size_t main_n = n;
    const uint8_t *nul = t->labels ? memchr(d, 0, n) : NULL;
    if (nul) main_n = (size_t)(nul - d);
    snprintf(path, sizeof path, "%.300s/%.200s", e->root, file);
    if (fz_write_file(path, d, main_n)) return -1;
    if (t->labels) {
        snprintf(path, sizeof path, "%.300s/%.200s", e->root, t->labels);
        if (fz_write_file(path, nul ? nul + 1 : d, nul ? n - main_n - 1 : 0)) return -1;
    }
    char err[AX_ERR_LEN] = "";
    ad_zs_set *s = NULL;
    if (ad_zs_load(t, e->root, n % 3 == 0 ? 1 : 0, &s, err)) return fz_rejected("ad_zs_load", err);
    long nreq = 0;
    for (int i = 0; i < s->n_docs; i++) {
        const ad_zs_doc *doc = &s->docs[i];
        if (doc->n_req < 1 || doc->gold < 0 || doc->gold >= doc->n_req) {
            fprintf(stderr, "ad_zs_load(%s): doc %d has n_req %d, gold %d\n", task, i, doc->n_req, doc->gold);
            abort();
        }
        for (int j = 0; j < doc->n_req; j++)
            if (!doc->req[j].context || !doc->req[j].continuation) {
                fprintf(stderr, "ad_zs_load(%s): doc %d request %d has a NULL string\n", task, i, j);
                abort();
            }
        nreq += doc->n_req;
    }
    if (nreq != s->n_requests) {
        fprintf(stderr, "ad_zs_load(%s): n_requests %ld but the docs hold %ld\n", task, s->n_requests, nreq);
        abort();
    }
    ad_zs_set_free(s);
    return 1;
}

static inline int fz_piqa(const uint8_t *d, size_t n) { return fz_zs("piqa", "data/piqa/valid.jsonl", d, n); }
static inline int fz_arc(const uint8_t *d, size_t n) {
    return fz_zs("arc_easy", "data/arc_easy/ARC-Easy-Test.jsonl", d, n);
}
static inline int fz_boolq(const uint8_t *d, size_t n) { return fz_zs("boolq", "data/boolq/dev.jsonl", d, n); }
static inline int fz_hellaswag_txt(const uint8_t *d, size_t n) {
    fz_env *e = fz_env_get();
    if (!e) return -1;
    char alt[AX_PATH_LEN];   /* the jsonl is preferred when present: make sure it is not */
    snprintf(alt, sizeof alt, "%.300s/data/hellaswag/hellaswag_val.jsonl", e->root);
    unlink(alt);
    return fz_zs("hellaswag", "data/hellaswag/hellaswag_val_full.txt", d, n);
}
static inline int fz_hellaswag_jsonl(const uint8_t *d, size_t n) {
    return fz_zs("hellaswag", "data/hellaswag/hellaswag_val.jsonl", d, n);
}
static inline int fz_winogrande(const uint8_t *d, size_t n) {
    return fz_zs("winogrande", "data/winogrande/dev.jsonl", d, n);
}
static inline int fz_lambada(const uint8_t *d, size_t n) {
    return fz_zs("lambada_openai", "data/lambada_openai/lambada_test.jsonl", d, n);
}

/* ---- mode strings ---------------------------------------------------------------------------------- */
static inline int fz_mode(const uint8_t *d, size_t n) {
    char *s = malloc(n + 1);
    if (!s) return -1;
    memcpy(s, d, n);
    s[n] = 0;   /* a C string as argv gives it: stops at the first NUL */
    char err[AX_ERR_LEN] = "";
    aq_mode m;
    int rc = aq_mode_parse(s, &m, err);
    free(s);
    if (rc) return fz_rejected("aq_mode_parse", err);
    if (!memchr(m.name, 0, sizeof m.name)) { fprintf(stderr, "aq_mode_parse: name not terminated\n"); abort(); }
    (void)aq_mode_is_integer(&m);
    return 1;
}

/* ---- table ------------------------------------------------------------------------------------------- */
typedef struct {
    const char *name;                         /* the harness and its tests/fuzz-corpus/<name>/ folder */
    int (*fn)(const uint8_t *, size_t);
} fz_target;

static inline const fz_target *fz_targets(void) {
    static const fz_target t[] = {
        {"config", fz_config},         {"safetensors", fz_safetensors}, {"model_index", fz_model_index},
        {"tokenizer", fz_tokenizer},   {"tokenize", fz_tokenize},       {"h5case", fz_h5case},
        {"wikitext", fz_wikitext},     {"piqa", fz_piqa},               {"arc", fz_arc},
        {"boolq", fz_boolq},           {"hellaswag_txt", fz_hellaswag_txt},
        {"hellaswag_jsonl", fz_hellaswag_jsonl}, {"winogrande", fz_winogrande},
        {"lambada", fz_lambada},       {"mode", fz_mode},               {NULL, NULL},
    };
    return t;
}

/* libFuzzer glue: a harness setup failure stops the run loudly (-1 would otherwise go unnoticed). */
static inline int fz_libfuzzer(int rc, const char *name) {
    if (rc < 0) {
        fprintf(stderr, "fuzz_%s: harness setup failed (see above)\n", name);
        abort();
    }
    return 0;
}

#endif
