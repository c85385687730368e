/* seeds.c — writes the seed corpora of the fuzz harnesses (tests/fuzz/fuzz_*.c) at `make fuzz` time:
 *   seeds DATA_ROOT OUT_DIR      (DATA_ROOT may be "" when there is none)
 * OUT_DIR/<harness>/seed-* files (nothing of the data root is copied into the repository):
 *   config         models/<name>/config.json of the data root; the tiny config of fuzz_targets.h
 *   safetensors    tiny checkpoints by ae_make_model_ex (f16, bf16, f32); the first 32 KB of
 *                  models/stories260K/model.safetensors
 *   model_index    the index ae_make_model writes for the tiny config with 2 shards
 *   tokenizer      models/stories260K/tokenizer.json (the LLaMA-2 one is 3.6 MB: too big a seed)
 *   tokenize       the first 1 KB of each WikiText-2 file, a few hand-written strings
 *   h5case         cases by aq_case_random + aq_case_run + aq_case_write (small M, N, K)
 *   wikitext       the first 4 KB of wiki.test.raw and wiki.valid.raw
 *   piqa, winogrande   the first 12 records, a NUL byte, the first 12 labels
 *   arc, boolq, lambada, hellaswag_txt   the first records / lines of the real files
 *   mode           aq_standard_modes and parametric forms
 * Exit status 0 unless OUT_DIR cannot be written. Linked against build-fuzz/libapex4.a. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_targets.h"

static int put(const char *out, const char *harness, const char *name, const void *d, size_t n) {
    char p[AX_PATH_LEN];
    snprintf(p, sizeof p, "%s/%s", out, harness);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/%s", out, harness, name);
    if (fz_write_file(p, d, n)) { fprintf(stderr, "seeds: cannot write %s\n", p); return -1; }
    return 0;
}

/* The first max_lines lines (at most max_bytes bytes) of root/rel into *buf; 0 when absent. */
static size_t head(const char *root, const char *rel, long max_lines, size_t max_bytes, char **buf) {
    *buf = NULL;
    if (!root[0]) return 0;
    char p[AX_PATH_LEN];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    char *b = malloc(max_bytes + 1);
    size_t n = b ? fread(b, 1, max_bytes, f) : 0;
    fclose(f);
    if (!b) return 0;
    long lines = 0;
    for (size_t i = 0; i < n; i++)
        if (b[i] == '\n' && ++lines == max_lines) { n = i + 1; break; }
    *buf = b;
    return n;
}

static void put_head(const char *out, const char *harness, const char *name, const char *root,
                     const char *rel, long lines, size_t bytes) {
    char *b;
    size_t n = head(root, rel, lines, bytes, &b);
    if (n) put(out, harness, name, b, n);
    free(b);
}

/* data file, NUL, labels file. */
static void put_pair(const char *out, const char *harness, const char *root, const char *rel,
                     const char *lab, long lines) {
    char *a, *b;
    size_t na = head(root, rel, lines, 16384, &a), nb = head(root, lab, lines, 4096, &b);
    if (na && nb) {
        char *c = malloc(na + nb + 1);
        if (c) {
            memcpy(c, a, na);
            c[na] = 0;
            memcpy(c + na + 1, b, nb);
            put(out, harness, "seed-head", c, na + nb + 1);
            free(c);
        }
    }
    free(a);
    free(b);
}

static void put_file(const char *out, const char *harness, const char *name, const char *path, size_t max) {
    char *d = NULL, err[AX_ERR_LEN];
    size_t n = 0;
    if (ax_read_file(path, &d, &n, err)) return;
    put(out, harness, name, d, n < max ? n : max);
    free(d);
}

static void h5_seed(const char *out, const char *tmp, const char *mode_s, int M, int N, int K, int ks) {
    char err[AX_ERR_LEN] = "", p[AX_PATH_LEN], name[64];
    aq_mode m;
    aq_case c;
    if (aq_mode_parse(mode_s, &m, err) || aq_case_random(&m, M, N, K, ks, 3, "normal", 0, &c, err)) {
        fprintf(stderr, "seeds: h5case %s: %s\n", mode_s, err);
        return;
    }
    snprintf(name, sizeof name, "seed-%s.h5", mode_s);
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    if (aq_case_run(&c, 1, err) || aq_case_write(p, &c, err)) fprintf(stderr, "seeds: h5case %s: %s\n", mode_s, err);
    else put_file(out, "h5case", name, p, 1 << 20);
    aq_case_free(&c);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: seeds DATA_ROOT OUT_DIR\n"); return 2; }
    const char *root = argv[1], *out = argv[2];
    if (mkdir(out, 0755) && errno != EEXIST) { perror(out); return 1; }
    char tmp[] = "/tmp/apex4-seeds-XXXXXX", p[AX_PATH_LEN], q[AX_PATH_LEN], err[AX_ERR_LEN] = "";
    if (!mkdtemp(tmp)) { perror("mkdtemp"); return 1; }

    /* config */
    put(out, "config", "seed-tiny.json", FZ_TINY_CONFIG, strlen(FZ_TINY_CONFIG));
    static const char *const models[] = {"stories260K", "wiki-gutenberg-13M", NULL};
    for (int i = 0; models[i] && root[0]; i++) {
        snprintf(p, sizeof p, "%s/models/%s/config.json", root, models[i]);
        snprintf(q, sizeof q, "seed-%s.json", models[i]);
        put_file(out, "config", q, p, 1 << 16);
    }
    /* safetensors and model_index: tiny checkpoints from the same config as the harness */
    char cfg[AX_PATH_LEN];
    snprintf(cfg, sizeof cfg, "%s/config.json", tmp);
    if (fz_write_file(cfg, FZ_TINY_CONFIG, strlen(FZ_TINY_CONFIG))) return 1;
    static const char *const dts[] = {"f16", "bf16", "f32", NULL};
    for (int i = 0; dts[i]; i++) {
        snprintf(p, sizeof p, "%s/m-%s", tmp, dts[i]);
        if (ae_make_model_ex(cfg, 5, p, 1, dts[i], err)) { fprintf(stderr, "seeds: make-model: %s\n", err); continue; }
        snprintf(q, sizeof q, "%s/model.safetensors", p);
        char name[64];
        snprintf(name, sizeof name, "seed-tiny-%s.safetensors", dts[i]);
        put_file(out, "safetensors", name, q, 1 << 20);
    }
    if (root[0]) {
        snprintf(p, sizeof p, "%s/models/stories260K/model.safetensors", root);
        put_file(out, "safetensors", "seed-stories260K-head.safetensors", p, 32768);
    }
    snprintf(p, sizeof p, "%s/sharded", tmp);
    if (ae_make_model(cfg, 5, p, 2, err)) fprintf(stderr, "seeds: make-model --shards 2: %s\n", err);
    snprintf(q, sizeof q, "%s/model.safetensors.index.json", p);
    put_file(out, "model_index", "seed-tiny-2shards.json", q, 1 << 16);
    /* tokenizer, tokenize */
    if (root[0]) {
        snprintf(p, sizeof p, "%s/models/stories260K/tokenizer.json", root);
        put_file(out, "tokenizer", "seed-stories260K.json", p, 1 << 20);
    }
    static const char *const texts[] = {"Hello world", " = Robert Boulter = \n", "caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80",
                                        "  leading and  double  spaces ", "\xff\xfe bad utf-8", "", NULL};
    for (int i = 0; texts[i]; i++) {
        snprintf(q, sizeof q, "seed-text-%d", i);
        put(out, "tokenize", q, texts[i], strlen(texts[i]));
    }
    put_head(out, "tokenize", "seed-wiki-test", root, "data/wikitext-2-raw/wiki.test.raw", 1 << 20, 1024);
    put_head(out, "tokenize", "seed-wiki-valid", root, "data/wikitext-2-raw/wiki.valid.raw", 1 << 20, 1024);
    /* h5case */
    h5_seed(out, tmp, "w4a4-g128", 2, 3, 128, 1);
    h5_seed(out, tmp, "w8a8", 2, 2, 64, 1);
    h5_seed(out, tmp, "w4a4-mixed-g128", 2, 2, 256, 2);
    h5_seed(out, tmp, "atom-g128-o128", 2, 2, 256, 1);
    /* datasets */
    put_head(out, "wikitext", "seed-test", root, "data/wikitext-2-raw/wiki.test.raw", 1 << 20, 4096);
    put_head(out, "wikitext", "seed-valid", root, "data/wikitext-2-raw/wiki.valid.raw", 1 << 20, 4096);
    put_pair(out, "piqa", root, "data/piqa/valid.jsonl", "data/piqa/valid-labels.lst", 12);
    put_pair(out, "winogrande", root, "data/winogrande/dev.jsonl", "data/winogrande/dev-labels.lst", 12);
    put_head(out, "arc", "seed-easy", root, "data/arc_easy/ARC-Easy-Test.jsonl", 12, 16384);
    put_head(out, "arc", "seed-challenge", root, "data/arc_challenge/ARC-Challenge-Test.jsonl", 12, 16384);
    put_head(out, "boolq", "seed-head", root, "data/boolq/dev.jsonl", 4, 16384);
    put_head(out, "lambada", "seed-head", root, "data/lambada_openai/lambada_test.jsonl", 12, 16384);
    put_head(out, "hellaswag_txt", "seed-head", root, "data/hellaswag/hellaswag_val_full.txt", 30, 16384);
    /* mode */
    for (int i = 0; aq_standard_modes[i]; i++) {
        snprintf(q, sizeof q, "seed-%d", i);
        put(out, "mode", q, aq_standard_modes[i], strlen(aq_standard_modes[i]));
    }
    static const char *const param[] = {"w4a16-g64", "w4a4-g16", "w4a4-mixed-g64", "atom-g64-o32", "atom-g2-o0", NULL};
    for (int i = 0; param[i]; i++) {
        snprintf(q, sizeof q, "seed-param-%d", i);
        put(out, "mode", q, param[i], strlen(param[i]));
    }
    nftw(tmp, fz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
