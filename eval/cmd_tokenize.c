/* eval/cmd_tokenize.c — `apex4 tokenize`: encode text with a tokenizer.json and print the ids, or
 * decode ids back to text (thin front end over eval/tokenizer.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "aq.h"
#include "ax_util.h"
#include "tokenizer.h"

int cmd_tokenize(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 tokenize --tokenizer PATH [--text T | --file F] [--no-bos] [--count | --pieces]\n"
            "       apex4 tokenize --tokenizer PATH --decode [--text \"ID ID ...\" | --file F]\n"
            "  --tokenizer PATH  tokenizer.json, or a model folder holding one\n"
            "  --text T          the text (default: read stdin; messages then say <stdin>)\n"
            "  --file F          read the text (or, with --decode, the ids) from F\n"
            "  --no-bos          do not prepend BOS\n"
            "  --count           print only the number of ids\n"
            "  --pieces          print one 'id<TAB>piece' line per id\n"
            "  --decode          input is ids (separated by spaces, commas or newlines); print the text\n"
            "Prints the ids on one line (stdout) and 'N ids' on stderr.\n");
}

/* Read all of stdin into a NUL-terminated malloc'd buffer (len excludes the NUL). */
static int read_stdin(char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0, r;
    char *b = malloc(cap);
    if (!b) return -1;
    while ((r = fread(b + n, 1, cap - n - 1, stdin)) > 0) {
        n += r;
        if (n + 1 == cap) {
            if (cap > SIZE_MAX / 2) { free(b); return -1; }
            char *nb = realloc(b, cap *= 2);
            if (!nb) { free(b); return -1; }
            b = nb;
        }
    }
    if (ferror(stdin)) { free(b); return -1; }
    b[n] = 0;
    *data = b; *len = n;
    return 0;
}

/* Parse the --decode input src[0..len): ids separated by spaces, tabs, commas or newlines, each an
 * integer in [0, n_vocab) (ax_parse_long: no sign tricks, no overflow, nothing trailing). `label`
 * names the input ("--text", the file, "<stdin>"). *ids malloc'd. Returns 0, or -1 with err naming
 * the option, the input, the item's position and what was expected. */
static int parse_ids(const char *src, size_t len, int n_vocab, const char *label, int **ids, size_t *n,
                     char *err) {
    size_t cap = 64, cnt = 0;
    int *v = malloc(cap * sizeof *v);
    char *tok = malloc(len + 1);
    if (!v || !tok) { free(v); free(tok); ax_seterr(err, "--decode: out of memory"); return -1; }
    for (size_t i = 0; i < len;) {
        char c = src[i];
        if (c == ' ' || c == ',' || c == '\n' || c == '\t' || c == '\r') { i++; continue; }
        size_t j = i;
        while (j < len && !strchr(" ,\n\t\r", src[j]) && src[j]) j++;
        if (j == i) j = i + 1;   /* a NUL byte: one item of its own, rejected below */
        memcpy(tok, src + i, j - i);
        tok[j - i] = 0;
        char what[AX_PATH_LEN + 64];
        snprintf(what, sizeof what, "--decode (%.200s), id #%zu", label, cnt + 1);
        long id;
        if (ax_parse_long(tok, 0, (long)n_vocab - 1, what, &id, err)) { free(v); free(tok); return -1; }
        if (cnt == cap) {
            int *nv = cap > SIZE_MAX / (2 * sizeof *v) ? NULL : realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) { free(v); free(tok); ax_seterr(err, "--decode: out of memory"); return -1; }
            v = nv;
        }
        v[cnt++] = (int)id;
        i = j;
    }
    free(tok);
    *ids = v;
    *n = cnt;
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *text = NULL, *file = NULL;
    int no_bos = 0, decode = 0, count = 0, pieces = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--tokenizer") && has) tok_path = argv[++i];
        else if (!strcmp(a, "--text") && has) text = argv[++i];
        else if (!strcmp(a, "--file") && has) file = argv[++i];
        else if (!strcmp(a, "--no-bos")) no_bos = 1;
        else if (!strcmp(a, "--decode")) decode = 1;
        else if (!strcmp(a, "--count")) count = 1;
        else if (!strcmp(a, "--pieces")) pieces = 1;
        else {
            fprintf(stderr, "apex4 tokenize: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!tok_path) { fprintf(stderr, "apex4 tokenize: --tokenizer is required\n"); usage(stderr); return 2; }
    if (text && file) { fprintf(stderr, "apex4 tokenize: give --text or --file, not both\n"); return 2; }

    char err[AX_ERR_LEN];
    ae_tokenizer *tok = NULL;
    if (ae_tokenizer_load(tok_path, &tok, err)) { fprintf(stderr, "apex4 tokenize: %s\n", err); return 2; }

    char *data = NULL;
    size_t len = 0;
    if (text) { len = strlen(text); }
    else if (file) {
        if (ax_read_file(file, &data, &len, err)) {
            fprintf(stderr, "apex4 tokenize: %s\n", err);
            ae_tokenizer_free(tok);
            return 2;
        }
    } else if (read_stdin(&data, &len)) {
        fprintf(stderr, "apex4 tokenize: cannot read stdin\n");
        ae_tokenizer_free(tok);
        return 2;
    }
    const char *src = text ? text : data;
    /* names the input in messages */
    const char *label = text ? "--text" : file ? file : "<stdin>";
    int rc = 0;

    if (decode) {
        size_t n = 0;
        int *ids = NULL;
        if (parse_ids(src, len, ae_tokenizer_vocab_size(tok), label, &ids, &n, err)) {
            fprintf(stderr, "apex4 tokenize: %s\n", err);
            rc = 2;
        } else {
            char *s = ae_detokenize(tok, ids, n);
            if (!s) { fprintf(stderr, "apex4 tokenize: out of memory\n"); rc = 2; }
            else { fputs(s, stdout); putchar('\n'); free(s); }
        }
        free(ids);
    } else {
        int *ids = NULL;
        size_t n = 0;
        double t0 = ax_now();
        if (ae_tokenize(tok, src, len, !no_bos, &ids, &n, err)) {
            fprintf(stderr, "apex4 tokenize: %s: %s\n", label, err);
            rc = 2;
        } else {
            double dt = ax_now() - t0;
            if (count) printf("%zu\n", n);
            else if (pieces)
                for (size_t i = 0; i < n; i++) {
                    const char *pc = ae_token_piece(tok, ids[i]);
                    printf("%d\t%s\n", ids[i], pc ? pc : "");
                }
            else {
                for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
                putchar('\n');
            }
            fprintf(stderr, "%zu ids (%s), %zu bytes, %.3f s\n", n, no_bos ? "no BOS" : "BOS included", len, dt);
        }
        free(ids);
    }
    free(data);
    ae_tokenizer_free(tok);
    return rc;
}
