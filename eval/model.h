/* model.h — LLaMA checkpoints in the Hugging Face layout (prefix ae_): config.json +
 * model.safetensors (or model.safetensors.index.json shards), memory-mapped and validated.
 * Source: HF transformers LlamaConfig / LlamaForCausalLM; safetensors format spec
 * (https://github.com/huggingface/safetensors, "Format"). Owners in pairs: ae_model_load / ae_model_free. */
#ifndef APEX4_AE_MODEL_H
#define APEX4_AE_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "aq.h"

typedef struct {
    int   dim;            /* hidden_size                                                  */
    int   hidden_dim;     /* intermediate_size (SwiGLU)                                    */
    int   n_layers;       /* num_hidden_layers                                            */
    int   n_heads;        /* num_attention_heads                                          */
    int   n_kv_heads;     /* num_key_value_heads (defaults to n_heads)                    */
    int   head_dim;       /* head_dim if present, else dim / n_heads                      */
    int   vocab_size;
    int   max_pos;        /* max_position_embeddings                                      */
    float rms_eps;        /* rms_norm_eps                                                 */
    float rope_theta;     /* rope_theta (default 10000)                                   */
    int   rope_llama3;    /* rope_scaling.rope_type == "llama3"                           */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int   rope_orig_max_pos; /* rope_scaling.original_max_position_embeddings             */
    int   tie_embeddings; /* tie_word_embeddings (HF LlamaConfig default when absent: false)  */
    int   bos_id, eos_id; /* -1 when absent                                               */
} ae_config;

typedef struct {
    float *attn_norm;   /* (dim)                          input_layernorm.weight               */
    float *wq;          /* (n_heads*head_dim, dim)        self_attn.q_proj.weight              */
    float *wk;          /* (n_kv_heads*head_dim, dim)     self_attn.k_proj.weight              */
    float *wv;          /* (n_kv_heads*head_dim, dim)     self_attn.v_proj.weight              */
    float *wo;          /* (dim, n_heads*head_dim)        self_attn.o_proj.weight              */
    float *ffn_norm;    /* (dim)                          post_attention_layernorm.weight      */
    float *w_gate;      /* (hidden_dim, dim)              mlp.gate_proj.weight                 */
    float *w_up;        /* (hidden_dim, dim)              mlp.up_proj.weight                   */
    float *w_down;      /* (dim, hidden_dim)              mlp.down_proj.weight                 */
} ae_layer;

/* All weights widened to fp32 (exact from F16/BF16/F32), owned by the model. lm_head aliases
 * tok_emb when the embeddings are tied. */
typedef struct {
    float    *tok_emb;    /* (vocab_size, dim)   model.embed_tokens.weight                       */
    ae_layer *layers;     /* (n_layers)                                                          */
    float    *final_norm; /* (dim)               model.norm.weight                               */
    float    *lm_head;    /* (vocab_size, dim)   lm_head.weight or tok_emb                       */
} ae_weights;

typedef struct {
    ae_config  cfg;
    ae_weights w;
    char       dir[1024];      /* the checkpoint folder                                       */
    char       dtype[8];       /* dtype of model.embed_tokens.weight: "F32", "F16" or "BF16"  */
    void      *priv;           /* loader-owned storage                                        */
} ae_model;

/* Parse and validate config.json (path) — the entry point for config.json (fuzz harnesses call it
 * on a file path). Parsed with ax_json_parse_strict (duplicate keys, trailing data, NUL bytes and
 * \u0000 escapes are errors). Every field read is type-checked; errors name the file, the key and
 * what was expected ("config.json: \"attention_bias\" must be a boolean, got a string"). Integer
 * fields must be integral numbers within: hidden_size [1, 65536], intermediate_size [1, 2^20],
 * num_hidden_layers [1, 1024], num_attention_heads / num_key_value_heads [1, 4096], head_dim
 * [2, 4096] and even, vocab_size [1, 2^22], max_position_embeddings [1, 2^24]; rms_norm_eps in
 * (0, 1], rope_theta in (0, 1e12]; num_attention_heads * head_dim <= 262144; vocab_size x
 * hidden_size and intermediate_size x hidden_size fp32 bytes must not overflow size_t; bos/eos ids
 * integers in [0, 2^22). model_type, hidden_act, torch_dtype, dtype and rope types must be strings;
 * tie_word_embeddings, attention_bias and mlp_bias booleans. Defaults as HF
 * LlamaConfig: num_key_value_heads = num_attention_heads, head_dim = hidden_size /
 * num_attention_heads, rms_norm_eps = 1e-6, rope_theta = 10000, max_position_embeddings = 2048,
 * tie_word_embeddings = false. Accepts the classic form (top-level rope_theta, rope_scaling) and the
 * newer rope_parameters {rope_theta, rope_type}; rope types other than default/llama3, model_type
 * other than "llama", hidden_act other than "silu" and attention_bias/mlp_bias = true are errors.
 * bos/eos: an id or the first of a list; -1 when absent. */
int ae_config_load(const char *path, ae_config *cfg, char *err);
/* Load a checkpoint folder: config.json, then model.safetensors or (if absent, as transformers'
 * from_pretrained) model.safetensors.index.json (ae_st_index_load) and its shards. An empty dir is
 * "--model: empty path"; a missing one, or one that is not a folder, an error naming it. Every tensor's dtype, shape and
 * data_offsets are checked against the header, the file size and the config (safetensors.h lists
 * the checks); a missing tensor, a tensor the config does not imply (biases, extra layers; only
 * *.rotary_emb.inv_freq buffers are tolerated) and a NaN/inf weight are errors naming the file and
 * tensor. lm_head.weight: with tie_word_embeddings it is ignored if present (HF ties it to
 * embed_tokens); without, its absence is an error. On success *out is owned by the caller
 * (ae_model_free). */
int ae_model_load(const char *dir, ae_model **out, char *err);
void ae_model_free(ae_model *m);

/* The one tokenizer/model compatibility check every command runs (eval ppl, eval zeroshot,
 * generate): a tokenizer with more pieces than the model's vocab_size (e.g. a 32,000-piece LLaMA-2
 * tokenizer with a 512-token model) would produce ids past the embedding table. Returns 0, or -1
 * with err naming tok_path, both sizes and the model folder. */
struct ae_tokenizer;
int ae_model_check_tokenizer(const ae_model *m, const struct ae_tokenizer *tok, const char *tok_path, char *err);

/* Write a random-weight checkpoint for config.json `config_path` into out_dir (created if needed):
 * config.json copy, F16 tensors (or the config's torch_dtype), N(0, 0.02) weights, norms = 1,
 * seeded; shards > 1 writes model-0000i-of-0000N.safetensors + model.safetensors.index.json.
 * Files are written atomically. */
int ae_make_model(const char *config_path, uint64_t seed, const char *out_dir, int shards, char *err);
/* The same with an explicit dtype: "f16", "bf16", "f32" (or "float16", "bfloat16", "float32");
 * NULL = the config's torch_dtype (or dtype), else F16. The written config.json gets torch_dtype set
 * to the dtype written. Values come from splitmix64 + Box–Muller, one stream per tensor seeded by
 * seed ^ FNV-1a(name), so they do not depend on `shards`. Errors: bad config, shards < 1 or more than
 * the number of tensors, empty or overlong out_dir, unknown dtype, I/O (naming the path). */
int ae_make_model_ex(const char *config_path, uint64_t seed, const char *out_dir, int shards,
                     const char *dtype, char *err);

#endif
