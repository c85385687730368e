/* testutil.h — tiny helpers shared by the Criterion tests (add only; keep it small). */
#ifndef APEX4_TESTUTIL_H
#define APEX4_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include "ax_util.h"
#include "model.h"

/* splitmix64 (Steele, Lea, Flood 2014): deterministic test inputs, state in the caller. */
static inline uint64_t tu_rand_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* Uniform in [0, 1) with 53 random bits. */
static inline double tu_rand_unit(uint64_t *state) { return (double)(tu_rand_u64(state) >> 11) * 0x1p-53; }

/* A fresh temporary directory "/tmp/apex4-test-XXXXXX" written into buf (>= 32 bytes); 0 or -1. */
static inline int tu_mkdtemp(char *buf, size_t len) {
    if (len < 32) return -1;
    snprintf(buf, len, "/tmp/apex4-test-XXXXXX");
    return mkdtemp(buf) ? 0 : -1;
}

/* Data root as the tools find it (ax_data_root); 0 when found. */
static inline int tu_data_root(char *buf, size_t len) {
    char err[AX_ERR_LEN];
    return ax_data_root(buf, len, err);
}

/* A random-weight checkpoint (ae_make_model, seed `seed`) in "<fresh tmp dir>/m"; dir receives the tmp
 * dir. Shapes chosen by the test (K multiples of 128 make every group size apply), GQA 4 heads over 2
 * KV heads, max_position_embeddings 128, fp16, tied or untied embeddings. */
static inline void tu_make_model(char *dir, size_t len, int dim, int hidden, int layers, int vocab,
                                 int tied, uint64_t seed) {
    cr_assert_eq(tu_mkdtemp(dir, len), 0);
    char cfg[512], out[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":%d,"
               "\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":4,"
               "\"num_key_value_heads\":2,\"vocab_size\":%d,\"max_position_embeddings\":128,"
               "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"tie_word_embeddings\":%s,"
               "\"torch_dtype\":\"float16\",\"bos_token_id\":1,\"eos_token_id\":2}\n",
            dim, hidden, layers, vocab, tied ? "true" : "false");
    fclose(f);
    snprintf(out, sizeof out, "%s/m", dir);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_make_model(cfg, seed, out, 1, err), 0, "make_model: %s", err);
}

#endif
