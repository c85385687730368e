/* eval/cmd_tokenize.c — `apex4 tokenize`: encode text with a tokenizer.json and print the ids, or
 * decode ids back to text (thin front end over eval/tokenizer.h). */
#include <errno.h>
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
            "  --text T          the text (default: read stdin)\n"
            "  --file F          read the text (or, with --decode, the ids) from F\n"
            "  --no-bos          do not prepend BOS\n"
            "  --count           print only the number of ids\n"
            "  --pieces          print one 'id<TAB>piece' line per id\n"
            "  --decode          input is ids (separated by spaces, commas or newlines); print the text\n"
            "Prints the ids on one line (stdout) and 'N ids' on stderr.\n");
}

static int read_stdin(char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0, r;
    char *b = malloc(cap);
    if (!b) return -1;
    while ((r = fread(b + n, 1, cap - n - 1, stdin)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) { free(b); return -1; }
            b = nb;
        }
    }
    b[n] = 0;
    *data = b; *len = n;
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
    int rc = 0;

    if (decode) {
        size_t cap = 64, n = 0;
        int *ids = malloc(cap * sizeof *ids);
        const char *p = src;
        while (ids && *p) {
            while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t' || *p == '\r') p++;
            if (!*p) break;
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < 0 || v >= ae_tokenizer_vocab_size(tok)) {
                fprintf(stderr, "apex4 tokenize: --decode: '%.20s' is not an id in [0, %d)\n", p,
                        ae_tokenizer_vocab_size(tok));
                rc = 2;
                break;
            }
            if (n == cap) {
                int *ni = realloc(ids, (cap *= 2) * sizeof *ids);
                if (!ni) { free(ids); ids = NULL; break; }
                ids = ni;
            }
            ids[n++] = (int)v;
            p = end;
        }
        if (!ids) { fprintf(stderr, "apex4 tokenize: out of memory\n"); rc = 2; }
        else if (!rc) {
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
            fprintf(stderr, "apex4 tokenize: %s: %s\n", file ? file : "--text", err);
            rc = 2;
        } else {
            double dt = ax_now() - t0;
            if (count) printf("%zu\n", n);
            else if (pieces)
                for (size_t i = 0; i < n; i++) printf("%d\t%s\n", ids[i], ae_token_piece(tok, ids[i]));
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
