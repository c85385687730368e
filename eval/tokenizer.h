/* tokenizer.h — Hugging Face tokenizer.json (BPE model with byte fallback, the LLaMA-2 / SentencePiece
 * style normalizer), producing exactly the ids HF `tokenizers` produces (prefix ae_).
 * Source: huggingface/tokenizers (models/bpe, normalizers, decoders), tokenizer.json format.
 * Byte-level BPE (LLaMA-3 style, regex pre-tokenizer) is rejected with a clear message. */
#ifndef APEX4_AE_TOKENIZER_H
#define APEX4_AE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ae_tokenizer ae_tokenizer;

/* Load tokenizer.json (path; a folder means <folder>/tokenizer.json) into *out (free with
 * ae_tokenizer_free). This is THE entry point the program uses (apex4 tokenize / ppl / zeroshot /
 * generate) and the one a fuzz harness should call on a file path: everything in the file is treated
 * as hostile input. The file must be UTF-8 and strict JSON (ax_json_parse_strict: no duplicate
 * keys, nothing after the top-level value, no NUL); every field used has its JSON type checked (ids
 * are integers in [0, INT_MAX - 1], not fractional, not strings; flags are booleans; an id given to
 * two different pieces or to two added tokens is an error); sizes taken from the file are checked
 * (ax_mul_size) before they size an allocation; regex patterns are bounded (<= 1024 bytes, bounded
 * compiled size, per-match limits: see tokenizer.c "the regex Replace normalizer").
 * Returns 0, or -1 with *out = NULL and err naming the file, the key and what was expected, or what
 * is unsupported (pre-tokenizers such as ByteLevel/Metaspace, a byte-level ('Ġ') vocabulary without
 * them, other normalizers or decoders, regex constructs outside the supported subset, non-BPE
 * models, merges naming pieces outside the vocab, …). Memory: the vocab and merges tables, O(file
 * size); time: O(file size) plus the regex compilations (bounded). */
int ae_tokenizer_load(const char *path, ae_tokenizer **out, char *err);
void ae_tokenizer_free(ae_tokenizer *t);

int ae_tokenizer_vocab_size(const ae_tokenizer *t);
int ae_tokenizer_bos(const ae_tokenizer *t);   /* -1 if none */
int ae_tokenizer_eos(const ae_tokenizer *t);   /* -1 if none */

/* Encode text [len bytes, UTF-8] as HF `tokenizer.encode(text, add_special_tokens=add_bos)` would
 * for a LLaMA tokenizer (add_bos: prepend BOS). *ids is malloc'd (caller frees), *n its length.
 * Added/special tokens written in the text ("<s>") are NOT split out: the text is taken literally
 * (HF would map them to their ids). Errors: text not valid UTF-8 (names the byte offset), add_bos
 * without a BOS token (names the tokenizer file), a character with no piece, no byte fallback and no
 * unk token, a regex normalizer reaching its per-match limits (names the pattern).
 * Normalizer regexes match code points (PCRE2 in UTF mode), as tokenizers' Oniguruma does.
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
