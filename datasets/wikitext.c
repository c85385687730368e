/* wikitext.c — WikiText-2 raw loader (see wikitext.h). */
#include "wikitext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ustr.h"

/* HF's wikitext builder keeps a row only when row.strip() is non-empty: Python (Unicode) whitespace. */
static int only_space(const char *s, size_t n) { return ad_py_lstrip_off(s, n) == n; }

int ad_wikitext_join(const char *raw, size_t n, char **joined, size_t *jlen, long *rows) {
    /* The output is never longer than the input plus two "\n" per row. */
    long nrows = 0;
    for (size_t i = 0; i < n; i++) nrows += raw[i] == '\n';
    if (n > 0 && raw[n - 1] != '\n') nrows++;
    char *out = malloc(n + 2 * (size_t)nrows + 2);
    if (!out) return -1;
    size_t o = 0, i = 0;
    long r = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && raw[e] != '\n') e++;
        if (r > 0) { out[o++] = '\n'; out[o++] = '\n'; }
        if (!only_space(raw + i, e - i)) {  /* the row keeps its line's "\n" (if it has one) */
            size_t take = e < n ? e - i + 1 : e - i;
            memcpy(out + o, raw + i, take);
            o += take;
        }
        r++;
        i = e + 1;
    }
    out[o] = '\0';
    *joined = out;
    *jlen = o;
    *rows = r;
    return 0;
}

int ad_wikitext_load_file(const char *path, ad_text *out, char *err) {
    memset(out, 0, sizeof *out);
    char *raw = NULL;
    size_t n = 0;
    if (ax_read_file(path, &raw, &n, err)) return -1;
    /* A NUL byte or invalid UTF-8 (Python's strict decoder, which HF datasets use to read the file)
     * is reported here, with the offset in this file, not later by the tokenizer in the joined text. */
    const char *nul = memchr(raw, '\0', n);
    size_t bad = ad_u8_check(raw, n);
    if (nul || bad != (size_t)-1) {
        size_t off = nul && (size_t)(nul - raw) < bad ? (size_t)(nul - raw) : bad;
        long line = 1;
        size_t bol = 0;
        for (size_t i = 0; i < off; i++)
            if (raw[i] == '\n') { line++; bol = i + 1; }
        if (nul && (size_t)(nul - raw) == off)
            ax_seterr(err, "%s: NUL byte at byte offset %zu (line %ld, column %zu): not a WikiText raw "
                      "text file", path, off, line, off - bol + 1);
        else
            ax_seterr(err, "%s: invalid UTF-8 (byte 0x%02x) at byte offset %zu (line %ld, column %zu)",
                      path, (unsigned char)raw[off], off, line, off - bol + 1);
        free(raw);
        return -1;
    }
    if (ad_wikitext_join(raw, n, &out->text, &out->len, &out->rows)) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory joining %zu bytes", path, n);
        free(raw);
        return -1;
    }
    free(raw);
    snprintf(out->path, sizeof out->path, "%s", path);
    if (ax_sha256_file(path, out->sha256, err)) { ad_text_free(out); return -1; }
    return 0;
}

int ad_wikitext_load(const char *split, ad_text *out, char *err) {
    memset(out, 0, sizeof *out);
    const char *file = NULL;
    if (split && !strcmp(split, "test")) file = "data/wikitext-2-raw/wiki.test.raw";
    else if (split && (!strcmp(split, "validation") || !strcmp(split, "valid")))
        file = "data/wikitext-2-raw/wiki.valid.raw";
    else if (split && !strcmp(split, "train")) file = "data/wikitext-2-raw/wiki.train.raw";
    if (!file) {
        if (err) snprintf(err, AX_ERR_LEN, "wikitext2: unknown split '%s' (test, validation, train)",
                          split ? split : "(null)");
        return -1;
    }
    char path[AX_PATH_LEN];
    if (ax_data_file(file, AD_WIKITEXT_HOWTO, path, sizeof path, err)) return -1;
    return ad_wikitext_load_file(path, out, err);
}

void ad_text_free(ad_text *t) {
    if (!t) return;
    free(t->text);
    t->text = NULL;
    t->len = 0;
}
