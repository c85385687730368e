/* wikitext.h — WikiText-2 (raw, wikitext-2-raw-v1) as the perplexity evaluations of GPTQ, Atom and
 * QuaRot read it (prefix ad_): the split's rows joined with "\n\n".
 * Source: Merity et al. 2016 (Pointer Sentinel Mixture Models); GPTQ datautils.py get_wikitext2
 * ("\n\n".join(testdata['text'])); files as in llama.cpp scripts/get-wikitext-2.sh. */
#ifndef APEX4_AD_WIKITEXT_H
#define APEX4_AD_WIKITEXT_H

#include <stddef.h>
#include "ax_util.h"

/* Where a user with internet gets the files (printed when they are missing). */
#define AD_WIKITEXT_HOWTO                                                                          \
    "get wikitext-2-raw-v1.zip (llama.cpp scripts/get-wikitext-2.sh: "                            \
    "https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip), unzip it "  \
    "into <data root>/data/wikitext-2-raw/ (wiki.test.raw sha256 "                                \
    "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08, wiki.valid.raw sha256 "     \
    "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7), or set APEX4_DATA"

typedef struct {
    char   *text;              /* joined text [len bytes] + NUL, malloc'd                          */
    size_t  len;               /* bytes, excluding the NUL                                          */
    long    rows;              /* rows (lines of the file) joined                                   */
    char    path[AX_PATH_LEN]; /* the file read                                                     */
    char    sha256[65];        /* sha256 of that file, lowercase hex                                */
} ad_text;

/* Load split "test" (wiki.test.raw) or "validation" (wiki.valid.raw) from
 * <data root>/data/wikitext-2-raw/ and build the evaluation text as "\n\n".join(rows) of the HF
 * wikitext-2-raw-v1 split (what GPTQ/Atom/QuaRot tokenize): one row per line of the file; a line
 * with non-whitespace keeps its trailing "\n" (HF rows do: " = Robert Boulter = \n"), a
 * whitespace-only line (Python str.strip() whitespace, Unicode-aware: datasets' wikitext builder
 * keeps a row only when row.strip() is non-empty) becomes "". Checked: with the LLaMA-2 tokenizer
 * the test text gives 341,469 ids incl. BOS (shared/models/MANIFEST.md, computed with HF
 * tokenizers); dropping the "\n" would give 2,891 fewer (one per non-empty line). Errors (-1, err):
 * unknown split; no data root or missing file (err names the path looked for and
 * AD_WIKITEXT_HOWTO); unreadable file; a NUL byte or invalid UTF-8 in the file (err names the file,
 * the byte offset in that file, line and column). out is owned by the caller: ad_text_free. */
int ad_wikitext_load(const char *split, ad_text *out, char *err);

/* The same joining applied to a file at an explicit path (tests, other corpora in that format). */
int ad_wikitext_load_file(const char *path, ad_text *out, char *err);

/* The joining alone: raw [n bytes] -> *joined (malloc'd, NUL-terminated), *jlen, *rows. -1 on
 * allocation failure. */
int ad_wikitext_join(const char *raw, size_t n, char **joined, size_t *jlen, long *rows);

void ad_text_free(ad_text *t);

#endif
