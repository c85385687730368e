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

/* Tensors of a checkpoint, addressed by (layer, id) instead of by pointer (lazy access: nothing is
 * widened at load; every read converts from the memory-mapped file, or generates for a virtual
 * model). Global tensors take layer = -1, the others 0 <= layer < n_layers. HF names and shapes
 * (modeling_llama.py), rows x cols, norms rows = 1:
 *   AE_T_EMB         model.embed_tokens.weight                 (vocab_size, dim)
 *   AE_T_FINAL_NORM  model.norm.weight                         (1, dim)
 *   AE_T_LM_HEAD     lm_head.weight (embed_tokens when tied)   (vocab_size, dim)
 *   AE_T_ATTN_NORM   model.layers.L.input_layernorm.weight     (1, dim)
 *   AE_T_WQ          ...self_attn.q_proj.weight                (n_heads*head_dim, dim)
 *   AE_T_WK, AE_T_WV ...self_attn.{k,v}_proj.weight            (n_kv_heads*head_dim, dim)
 *   AE_T_WO          ...self_attn.o_proj.weight                (dim, n_heads*head_dim)
 *   AE_T_FFN_NORM    ...post_attention_layernorm.weight        (1, dim)
 *   AE_T_GATE, AE_T_UP ...mlp.{gate,up}_proj.weight            (hidden_dim, dim)
 *   AE_T_DOWN        ...mlp.down_proj.weight                   (dim, hidden_dim) */
typedef enum { AE_T_EMB = 0, AE_T_FINAL_NORM, AE_T_LM_HEAD,           /* global: layer = -1 */
               AE_T_ATTN_NORM, AE_T_WQ, AE_T_WK, AE_T_WV, AE_T_WO,     /* per layer          */
               AE_T_FFN_NORM, AE_T_GATE, AE_T_UP, AE_T_DOWN, AE_T_COUNT } ae_tensor_id;

/* Seed of `--model random:<preset or config.json>` without ",seed=S" (make-model has no default:
 * its --seed is required; 1 is the README's example, `make-model --config ... --seed 1`). */
#define AE_MODEL_DEFAULT_SEED 1u

typedef struct {
    ae_config  cfg;
    char       dir[1024];      /* the checkpoint folder, or the "random:..." spec of a virtual model */
    char       dtype[8];       /* dtype of model.embed_tokens.weight: "F32", "F16" or "BF16";
                                * a virtual model is "F16"                                        */
    void      *priv;           /* loader-owned storage (open files, tensor table)                 */
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
/* The same checks on config.json text [len] (what names it in messages, e.g. "preset llama2-7b"). */
int ae_config_parse(const char *text, size_t len, const char *what, ae_config *cfg, char *err);
/* Load a checkpoint folder: config.json, then model.safetensors or (if absent, as transformers'
 * from_pretrained) model.safetensors.index.json (ae_st_index_load) and its shards, memory-mapped.
 * An empty dir is "--model: empty path"; a missing one, or one that is not a folder, an error naming
 * it. Every tensor's dtype, shape and data_offsets are checked against the header, the file size and
 * the config (safetensors.h lists the checks); a missing tensor and a tensor the config does not
 * imply (biases, extra layers; only *.rotary_emb.inv_freq buffers are tolerated) are errors naming
 * the file and tensor. lm_head.weight: with tie_word_embeddings it is ignored if present (HF ties it
 * to embed_tokens); without, its absence is an error. No value is read at load: a NaN/inf weight is
 * an error of the read that meets it (ae_model_read_f32/f16), naming the file, the tensor and the
 * flat index.
 * Virtual checkpoints: dir = "random:<preset or path/to/config.json>[,seed=S]" (S an unsigned
 * 64-bit integer, decimal or 0x hex; default AE_MODEL_DEFAULT_SEED). Presets (ae_model_preset_config):
 * llama2-7b, llama2-13b, llama2-70b, llama3-8b, tiny. Tensors are generated on read with the
 * generator of `apex4 make-model` (ae_gen_normal) and rounded to fp16, so every tensor equals the one
 * of a checkpoint `make-model --config <that config> --seed S --dtype f16` writes; m->dtype is "F16"
 * whatever the config's torch_dtype says. Errors name --model: "random:" with nothing after it, a
 * name that is neither a preset nor a readable config.json, a bad or overflowing seed=, an unknown
 * key, seed= twice, and the config's own errors.
 * On success *out is owned by the caller (ae_model_free). */
int ae_model_load(const char *dir, ae_model **out, char *err);
void ae_model_free(ae_model *m);

/* Shape of tensor (layer, id): rows x cols (norms: rows 1, cols dim); name [96] (may be NULL)
 * receives the HF name of the tensor that is read (model.embed_tokens.weight for a tied lm_head).
 * Errors: id outside [0, AE_T_COUNT), layer != -1 for a global id, layer outside [0, n_layers) for a
 * per-layer one (err names the model and both numbers). */
int ae_model_tensor_shape(const ae_model *m, int layer, ae_tensor_id id, size_t *rows, size_t *cols, char *name,
                          char *err);
/* Rows [r0, r0+nr) of tensor (layer, id), row-major, nr*cols values into dst:
 *   _f32: widened to fp32, exact (F32 copy, F16/BF16 widened);
 *   _f16: fp16 bits (F16 copied; F32 and BF16 rounded to nearest even, as aq_f32_to_f16).
 * A virtual model generates the values (fp16 values, so _f32 gives them widened). Big reads run on
 * all cores (ae_parallel_for, element-wise: the result does not depend on the thread count).
 * Errors (-1, err naming the file or the virtual spec, the tensor and the flat index in the tensor):
 * a NaN or inf value; for _f16 a finite value that overflows fp16 (|v| > 65504 after rounding);
 * r0 + nr > rows; the shape errors above. nr = 0 reads nothing. */
int ae_model_read_f32(const ae_model *m, int layer, ae_tensor_id id, size_t r0, size_t nr, float *dst, char *err);
int ae_model_read_f16(const ae_model *m, int layer, ae_tensor_id id, size_t r0, size_t nr, uint16_t *dst,
                      char *err);
/* For a virtual model (returns 1): the generator parameters of tensor (layer, id), for a device
 * generator that must equal ae_model_read_*: value k (flat index in the tensor) = fp16-RNE of
 * ae_gen_normal(*tensor_seed, *std, k, 1) when *std > 0; = *constant (1 for the RMSNorm weights) when
 * *std == 0. std is a double (the generator multiplies in double; 0.02 as a float would change
 * values). Returns 0 for a file-backed model (outputs untouched), -1 for a bad (layer, id) (err). */
int ae_model_virtual_params(const ae_model *m, int layer, ae_tensor_id id, uint64_t *tensor_seed, double *std,
                            float *constant, char *err);
/* A 64-bit fingerprint of the weights, for cache keys: file-backed, a hash of every tensor's name,
 * dtype, shape and raw bytes from the mmap (fixed 1 MiB chunks hashed in parallel, combined in
 * order: independent of the thread count); virtual, a hash of the config text and the seed. */
uint64_t ae_model_fingerprint(const ae_model *m);
/* The config.json text of a preset of `random:<preset>` (Hugging Face configs: llama2-7b/-13b/-70b =
 * meta-llama/Llama-2-*-hf, llama3-8b = meta-llama/Meta-Llama-3-8B; tiny = a 2-layer 64-wide test
 * model with vocab 512, for the stories260K tokenizer), or NULL for an unknown name.
 * ae_model_preset_names: "llama2-7b, llama2-13b, ...". */
const char *ae_model_preset_config(const char *name);
const char *ae_model_preset_names(void);

/* The one tokenizer/model compatibility check every command runs (eval ppl, eval zeroshot,
 * generate): a tokenizer with more pieces than the model's vocab_size (e.g. a 32,000-piece LLaMA-2
 * tokenizer with a 512-token model) would produce ids past the embedding table. Returns 0, or -1
 * with err naming tok_path, both sizes and the model folder. */
struct ae_tokenizer;
int ae_model_check_tokenizer(const ae_model *m, const struct ae_tokenizer *tok, const char *tok_path, char *err);

/* Write a random-weight checkpoint for config.json `config_path` into out_dir (created if needed):
 * config.json copy, F16 tensors (or the config's torch_dtype), N(0, 0.02) weights, norms = 1,
 * seeded; shards > 1 writes model-0000i-of-0000N.safetensors + model.safetensors.index.json.
 * Files are written atomically. config_path may also name a preset of random:<preset>
 * (ae_model_preset_config: llama2-7b, ...) when no file of that name exists. */
int ae_make_model(const char *config_path, uint64_t seed, const char *out_dir, int shards, char *err);
/* The same with an explicit dtype: "f16", "bf16", "f32" (or "float16", "bfloat16", "float32");
 * NULL = the config's torch_dtype (or dtype), else F16. The written config.json gets torch_dtype set
 * to the dtype written. Values come from splitmix64 + Box–Muller, one stream per tensor seeded by
 * seed ^ FNV-1a(name), so they do not depend on `shards`. Errors: bad config, shards < 1 or more than
 * the number of tensors, empty or overlong out_dir, unknown dtype, I/O (naming the path). */
int ae_make_model_ex(const char *config_path, uint64_t seed, const char *out_dir, int shards,
                     const char *dtype, char *err);

/* The generator of make-model and of virtual checkpoints (eval/make_model.c), one implementation:
 * n samples [first, first+n) of the stream of tensor_seed, N(0, std²) by Box–Muller in double from
 * splitmix64 (Steele, Lea, Flood 2014), both outputs used: sample 2p and 2p+1 are
 * (float)(std·r·cos θ), (float)(std·r·sin θ) with r = sqrt(-2 ln u1), θ = 2π u2, where u1, u2 are the
 * next two 53-bit uniforms in (0, 1] of the splitmix64 state tensor_seed + 2p·γ (counter-based:
 * any range can be generated alone; runs on all cores, the same values for any thread count).
 * dst [n] fp32. ae_gen_tensor_seed: seed ^ FNV-1a-64(name), the per-tensor seed make-model uses —
 * note: with the offset basis 1469598103934665603 that make-model has always used (one digit short
 * of the standard 14695981039346656037; kept, so that written checkpoints keep their values). */
void     ae_gen_normal(uint64_t tensor_seed, double std, size_t first, size_t n, float *dst);
uint64_t ae_gen_tensor_seed(uint64_t seed, const char *name);

#endif
