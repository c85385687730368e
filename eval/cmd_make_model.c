/* eval/cmd_make_model.c — `apex4 make-model`: write a random-weight LLaMA checkpoint in the HF
 * layout (thin front end over ae_make_model_ex, eval/model.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "aq.h"
#include "ax_util.h"
#include "model.h"

int cmd_make_model(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 make-model --config FILE --seed S --out DIR [--shards N] [--dtype f16|bf16|f32]\n"
            "  --config FILE   a LlamaForCausalLM config.json (copied to DIR with torch_dtype updated), or a\n"
            "                  preset: llama2-7b, llama2-13b, llama2-70b, llama3-8b, tiny (the configs of\n"
            "                  --model random:<preset>, which gives the same weights for the same seed)\n"
            "  --seed S        unsigned 64-bit seed of the N(0, 0.02) weights (norm weights are 1)\n"
            "  --out DIR       output folder (created if needed)\n"
            "  --shards N      N > 1 writes model-0000i-of-0000N.safetensors + model.safetensors.index.json\n"
            "  --dtype D       tensor dtype (default: the config's torch_dtype, else f16)\n");
}

int cmd_make_model(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *dtype = NULL, *seed_s = NULL;
    long shards = 1;
    char err[AX_ERR_LEN];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--config") && has) config = argv[++i];
        else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--dtype") && has) dtype = argv[++i];
        else if (!strcmp(a, "--seed") && has) seed_s = argv[++i];
        else if (!strcmp(a, "--shards") && has) {
            /* the file names model-NNNNN-of-NNNNN.safetensors carry 5 digits */
            if (ax_parse_long(argv[++i], 1, 99999, "--shards", &shards, err)) {
                fprintf(stderr, "apex4 make-model: %s\n", err);
                return 2;
            }
        } else {
            fprintf(stderr, "apex4 make-model: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!config || !out || !seed_s) {
        fprintf(stderr, "apex4 make-model: --config, --seed and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (!*config) { fprintf(stderr, "apex4 make-model: --config: empty path\n"); return 2; }
    if (!*out) { fprintf(stderr, "apex4 make-model: --out: empty path\n"); return 2; }
    uint64_t seed;
    if (ax_parse_u64(seed_s, "--seed", &seed, err)) {
        fprintf(stderr, "apex4 make-model: %s\n", err);
        return 2;
    }
    if (ae_make_model_ex(config, seed, out, (int)shards, dtype, err)) {
        fprintf(stderr, "apex4 make-model: %s\n", err);
        return 2;
    }
    ae_config c;
    char cp[4200];
    snprintf(cp, sizeof cp, "%.4000s/config.json", out);
    if (ae_config_load(cp, &c, err)) { fprintf(stderr, "apex4 make-model: %s\n", err); return 2; }
    long long params = (long long)c.vocab_size * c.dim * (c.tie_embeddings ? 1 : 2) + c.dim +
                       (long long)c.n_layers * (2LL * c.dim + (long long)c.dim * c.n_heads * c.head_dim * 2 +
                                                (long long)c.dim * c.n_kv_heads * c.head_dim * 2 +
                                                3LL * c.dim * c.hidden_dim);
    printf("wrote %s: %lld parameters, %d layers, dim %d, %s, %ld shard%s, seed %llu\n", out, params,
           c.n_layers, c.dim, dtype ? dtype : "config dtype", shards, shards > 1 ? "s" : "", (unsigned long long)seed);
    return 0;
}
