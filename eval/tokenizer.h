/* tokenizer.h — Hugging Face tokenizer.json (BPE model with byte fallback, the LLaMA-2 / SentencePiece
 * style normalizer), producing exactly the ids HF `tokenizers` produces (prefix ae_).
 * Source: huggingface/tokenizers (models/bpe, normalizers, decoders), tokenizer.json format.
 * Byte-level BPE (LLaMA-3 style, regex pre-tokenizer) is rejected with a clear message. */
#ifndef APEX4_AE_TOKENIZER_H
#define APEX4_AE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ae_tokenizer ae_tokenizer;

/* Load tokenizer.json (path; a folder means <folder>/tokenizer.json). Errors name the file and what
 * is unsupported or malformed (pre-tokenizers such as ByteLevel/Metaspace, other normalizers or
 * decoders, non-BPE models, merges naming pieces outside the vocab, …). */
int ae_tokenizer_load(const char *path, ae_tokenizer **out, char *err);
void ae_tokenizer_free(ae_tokenizer *t);

int ae_tokenizer_vocab_size(const ae_tokenizer *t);
int ae_tokenizer_bos(const ae_tokenizer *t);   /* -1 if none */
int ae_tokenizer_eos(const ae_tokenizer *t);   /* -1 if none */

/* Encode text [len bytes, UTF-8] as HF `tokenizer.encode(text, add_special_tokens=add_bos)` would
 * for a LLaMA tokenizer (add_bos: prepend BOS). *ids is malloc'd (caller frees), *n its length.
 * Added/special tokens written in the text ("<s>") are NOT split out: the text is taken literally
 * (HF would map them to their ids). Errors: text not valid UTF-8 (names the byte offset), add_bos
 * without a BOS token, a character with no piece, no byte fallback and no unk token.
 * Cost: O(n log n) in the text length (one heap-driven BPE pass over the whole normalized text, as
 * HF does with no pre-tokenizer); WikiText-2 test (1.3 MB) takes about 0.7 s with LLaMA-2's vocab. */
int ae_tokenize(const ae_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                size_t *n, char *err);

/* Decode ids [n] as HF `decode(ids, skip_special_tokens=True)` does (decoder chain of tokenizer.json:
 * Replace "▁"→" ", ByteFallback, Fuse, Strip). Returns a malloc'd NUL-terminated string. */
char *ae_detokenize(const ae_tokenizer *t, const int *ids, size_t n);

/* The raw piece string of one id (vocab entry), or NULL if out of range. */
const char *ae_token_piece(const ae_tokenizer *t, int id);

#endif
