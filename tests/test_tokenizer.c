/* test_tokenizer.c — eval/tokenizer.c: BPE with byte fallback on tokenizer.json files.
 *
 * Where the expected ids come from:
 *  - synthetic tokenizer.json files written here: derived by hand from their vocab and merges
 *    (derivation in the comment next to each case);
 *  - the real files (../shared/models/{llama2-tokenizer,stories260K}/tokenizer.json): derived by
 *    hand from the files' vocab ids and merge ranks (quoted in the comments; looked up with
 *    python3 json on the file), and cross-checked with Hugging Face `tokenizers` 0.23.3
 *    (Tokenizer.from_file(...).encode(text).ids), an independent implementation;
 *  - WikiText-2: the counts and first ids stated in shared/models/MANIFEST.md (HF tokenizers and
 *    SentencePiece, computed when the files were made).
 *  - regex normalizers and non-ASCII text: ids computed once with HF tokenizers 0.23.3 (the Python
 *    commands are quoted next to the tables) and pasted as constants;
 *  - rejected files: the message must name the file and the key / construct (properties, by hand).
 * Tests needing the data root skip visibly without it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ax_util.h"
#include "testutil.h"
#include "tokenizer.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static void rm_tree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Synthetic tokenizer. Vocab: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258 (byte b -> 3 + b),
 * ▁ 259, a 260, b 261, c 262, ab 263, bc 264, ▁a 265, abc 266, aa 267, ca 268.
 * Merges by rank: 0 "b c", 1 "a b", 2 "▁ a", 3 "a bc", 4 "a a".
 * `normalizer`, `pre`, `model_extra` and `decoder` are spliced into the JSON. */
static ae_tokenizer *synth_ex(const char *normalizer, const char *pre, const char *model_extra,
                              const char *merges, char *err_out) {
    char dir[64], path[128];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
               "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
               "\"normalizer\":%s,\"pre_tokenizer\":%s,"
               "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
               "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
               "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},"
               "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
               "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\"%s,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2",
            normalizer, pre, model_extra);
    for (int b = 0; b < 256; b++) fprintf(f, ",\"<0x%02X>\":%d", b, 3 + b);
    fprintf(f, ",\"\xe2\x96\x81\":259,\"a\":260,\"b\":261,\"c\":262,\"ab\":263,\"bc\":264,\"\xe2\x96\x81" "a\":265,"
               "\"abc\":266,\"aa\":267,\"ca\":268},\"merges\":%s}}\n", merges);
    fclose(f);
    ae_tokenizer *t = NULL;
    char err[AX_ERR_LEN] = "";
    int rc = ae_tokenizer_load(path, &t, err);
    if (err_out) snprintf(err_out, AX_ERR_LEN, "%s", err);
    rm_tree(dir);
    if (!err_out) cr_assert_eq(rc, 0, "synthetic tokenizer: %s", err);
    return rc ? NULL : t;
}

#define LLAMA_NORM "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"}," \
                   "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]}"
#define MERGES_STR "[\"b c\",\"a b\",\"\xe2\x96\x81 a\",\"a bc\",\"a a\"]"
#define MERGES_ARR "[[\"b\",\"c\"],[\"a\",\"b\"],[\"\xe2\x96\x81\",\"a\"],[\"a\",\"bc\"],[\"a\",\"a\"]]"
#define BF_ON ",\"fuse_unk\":true,\"byte_fallback\":true"

static ae_tokenizer *synth(void) { return synth_ex(LLAMA_NORM, "null", BF_ON, MERGES_STR, NULL); }

static void expect_ids(const ae_tokenizer *t, const char *text, int add_bos, const int *exp, size_t n_exp) {
    int *ids = NULL;
    size_t n = 0;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_tokenize(t, text, strlen(text), add_bos, &ids, &n, err), 0, "'%s': %s", text, err);
    cr_assert_eq(n, n_exp, "'%s': %zu ids, expected %zu", text, n, n_exp);
    for (size_t i = 0; i < n; i++) cr_assert_eq(ids[i], exp[i], "'%s': id[%zu] = %d, expected %d", text, i, ids[i], exp[i]);
    free(ids);
}
#define EXPECT(t, text, bos, ...) do { const int e_[] = {__VA_ARGS__}; \
        expect_ids(t, text, bos, e_, sizeof e_ / sizeof e_[0]); } while (0)

static void expect_decode(const ae_tokenizer *t, const int *ids, size_t n, const char *exp) {
    char *s = ae_detokenize(t, ids, n);
    cr_assert_not_null(s);
    cr_assert_str_eq(s, exp);
    free(s);
}
#define EXPECT_DECODE(t, exp, ...) do { const int i_[] = {__VA_ARGS__}; \
        expect_decode(t, i_, sizeof i_ / sizeof i_[0], exp); } while (0)

static ae_tokenizer *real(const char *model) {
    char rel[128], path[AX_PATH_LEN], err[AX_ERR_LEN];
    snprintf(rel, sizeof rel, "models/%s/tokenizer.json", model);
    if (ax_data_file(rel, NULL, path, sizeof path, err)) {
        cr_skip_test("skipped: no data root with %s (%s)", rel, err);
        return NULL;
    }
    ae_tokenizer *t = NULL;
    cr_assert_eq(ae_tokenizer_load(path, &t, err), 0, "%s", err);
    return t;
}

/* ---- synthetic: the BPE model itself --------------------------------------------------------- */

Test(tokenizer_synth, merges_apply_by_rank_with_stale_pairs_skipped) {
    ae_tokenizer *t = synth();
    /* "abc" -> "▁abc" = ▁ a b c. Pairs: (▁,a) r2, (a,b) r1, (b,c) r0.
     * r0: ▁ a bc (new pair (a,bc) r3). r1 (a,b) is stale: a's right neighbour is now bc -> skip.
     * r2: ▁a bc (no merge ▁a+bc). r3 (a,bc): a was merged away -> skip. => ▁a 265, bc 264. */
    EXPECT(t, "abc", 0, 265, 264);
    /* "ab" -> ▁ a b: (▁,a) r2, (a,b) r1. r1: ▁ ab; (▁,ab) no merge. => ▁ 259, ab 263. */
    EXPECT(t, "ab", 0, 259, 263);
    /* with BOS (post_processor template's leading <s> = 1) */
    EXPECT(t, "ab", 1, 1, 259, 263);
    /* empty text: Prepend does nothing on an empty string; only BOS. */
    EXPECT(t, "", 1, 1);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, equal_ranks_merge_leftmost_first) {
    /* no normalizer: "aaa" = a a a, pairs (a,a) r4 at positions 0 and 1 (same rank): the leftmost
     * merges first -> aa a; the pair at 1 is then stale. => aa 267, a 260. "aaaa" -> aa aa. */
    ae_tokenizer *t = synth_ex("null", "null", BF_ON, MERGES_STR, NULL);
    EXPECT(t, "aaa", 0, 267, 260);
    EXPECT(t, "aaaa", 0, 267, 267);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, merges_as_pairs_equal_merges_as_strings) {
    /* The newer tokenizer.json form [["a","b"],…] describes the same ranks as ["a b",…]. */
    ae_tokenizer *t = synth_ex(LLAMA_NORM, "null", BF_ON, MERGES_ARR, NULL);
    EXPECT(t, "abc", 0, 265, 264);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, spaces_and_byte_fallback) {
    ae_tokenizer *t = synth();
    /* " a" -> "▁▁a": (▁,▁) no merge, (▁,a) r2 -> ▁ ▁a. => 259, 265 */
    EXPECT(t, " a", 0, 259, 265);
    /* "a\n" -> "▁a\n": '\n' is not a piece -> <0x0A> = 3 + 10 = 13. => ▁a 265, 13 */
    EXPECT(t, "a\n", 0, 265, 13);
    /* "é" = C3 A9 -> "▁é": ▁ 259, <0xC3> = 3 + 195 = 198, <0xA9> = 3 + 169 = 172 */
    EXPECT(t, "\xc3\xa9", 0, 259, 198, 172);
    /* 4-byte emoji U+1F600 = F0 9F 98 80 -> 3 + {240, 159, 152, 128} */
    EXPECT(t, "\xf0\x9f\x98\x80", 0, 259, 243, 162, 155, 131);
    /* digits are not pieces either: "7" = 0x37 -> 3 + 55 = 58 */
    EXPECT(t, "7", 0, 259, 58);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, unk_without_byte_fallback_fused_or_not) {
    /* byte_fallback false: unknown characters become <unk> = 0; fuse_unk merges a run of them. */
    ae_tokenizer *t = synth_ex("null", "null", ",\"fuse_unk\":true,\"byte_fallback\":false", MERGES_STR, NULL);
    EXPECT(t, "xxa", 0, 0, 260);
    ae_tokenizer_free(t);
    t = synth_ex("null", "null", ",\"fuse_unk\":false,\"byte_fallback\":false", MERGES_STR, NULL);
    EXPECT(t, "xxa", 0, 0, 0, 260);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, ignore_merges_takes_whole_word_from_vocab) {
    /* "ca" is in the vocab (268) but no merge builds it: without ignore_merges c 262, a 260; with
     * it, the whole word is looked up first (models/bpe/model.rs) -> 268. */
    ae_tokenizer *t = synth_ex("null", "null", BF_ON ",\"ignore_merges\":false", MERGES_STR, NULL);
    EXPECT(t, "ca", 0, 262, 260);
    ae_tokenizer_free(t);
    t = synth_ex("null", "null", BF_ON ",\"ignore_merges\":true", MERGES_STR, NULL);
    EXPECT(t, "ca", 0, 268);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, strip_and_regex_collapse_normalizers) {
    /* stories260K-style: Strip, Replace / {2,}/ -> " ", Prepend ▁, Replace " " -> ▁.
     * "  a   b  " -> "a   b" -> "a b" -> "▁a b" -> "▁a▁b" = (▁,a) r2 -> ▁a ▁ b => 265, 259, 261 */
    ae_tokenizer *t = synth_ex("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\",\"strip_left\":true,"
                               "\"strip_right\":true},{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" {2,}\"},"
                               "\"content\":\" \"},{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
                               "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]}",
                               "null", BF_ON, MERGES_STR, NULL);
    EXPECT(t, "  a   b  ", 0, 265, 259, 261);
    /* Strip removes Unicode whitespace (Rust char::is_whitespace), e.g. U+3000 and tabs: "\t\xe3\x80\x80a" -> "a" -> ▁a */
    EXPECT(t, "\t\xe3\x80\x80" "a", 0, 265);
    /* all whitespace -> empty after Strip -> no ids */
    EXPECT(t, " \t\n ", 1, 1);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, decode_follows_the_decoder_chain) {
    ae_tokenizer *t = synth();
    /* ▁a bc -> "▁abc" -> Replace -> " abc" -> Strip one leading space -> "abc" */
    EXPECT_DECODE(t, "abc", 265, 264);
    /* special tokens are skipped: <s> ▁ ▁a </s> -> "  a" -> "  a" minus one space = " a" */
    EXPECT_DECODE(t, " a", 1, 259, 265, 2);
    /* byte fallback: <0xC3> <0xA9> -> "é"; a lone <0xC3> is invalid UTF-8 -> U+FFFD per byte */
    EXPECT_DECODE(t, "\xc3\xa9", 198, 172);
    EXPECT_DECODE(t, "\xef\xbf\xbd" "a", 198, 260);
    EXPECT_DECODE(t, "\xef\xbf\xbd\xef\xbf\xbd", 198, 198);
    /* out-of-range ids are ignored (HF id_to_token gives None) */
    EXPECT_DECODE(t, "a", 260, 100000, -5);
    cr_assert_str_eq(ae_token_piece(t, 263), "ab");
    cr_assert_null(ae_token_piece(t, 269));
    cr_assert_eq(ae_tokenizer_vocab_size(t), 269);
    cr_assert_eq(ae_tokenizer_bos(t), 1);
    cr_assert_eq(ae_tokenizer_eos(t), 2);
    ae_tokenizer_free(t);
}

Test(tokenizer_synth, invalid_utf8_input_is_an_error) {
    ae_tokenizer *t = synth();
    int *ids = NULL;
    size_t n = 0;
    char err[AX_ERR_LEN] = "";
    cr_assert_neq(ae_tokenize(t, "ab\xff", 3, 1, &ids, &n, err), 0);
    cr_assert_not_null(strstr(err, "UTF-8"), "%s", err);
    cr_assert_not_null(strstr(err, "offset 2"), "%s", err);
    cr_assert_null(ids);
    ae_tokenizer_free(t);
}

/* ---- synthetic: rejected files ----------------------------------------------------------------- */

static void expect_reject(const char *norm, const char *pre, const char *extra, const char *merges,
                          const char *needle) {
    char err[AX_ERR_LEN] = "";
    ae_tokenizer *t = synth_ex(norm, pre, extra, merges, err);
    cr_assert_null(t, "expected a load error mentioning '%s'", needle);
    cr_assert_not_null(strstr(err, needle), "error '%s' should mention '%s'", err, needle);
    cr_assert_not_null(strstr(err, "tokenizer.json"), "error '%s' should name the file", err);
}

Test(tokenizer_reject, byte_level_pre_tokenizer) {
    expect_reject(LLAMA_NORM, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}", BF_ON, MERGES_STR, "ByteLevel");
    expect_reject("null", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\"}]}", BF_ON, MERGES_STR,
                  "pre_tokenizer");
}

Test(tokenizer_reject, unsupported_normalizer_and_regex) {
    expect_reject("{\"type\":\"NFKC\"}", "null", BF_ON, MERGES_STR, "NFKC");
    /* \d depends on Unicode tables that differ between PCRE2 10.42 (Unicode 14) and tokenizers'
     * Oniguruma (Unicode 16); Ruby's (?m) is PCRE2's (?s): both rejected, naming the pattern */
    expect_reject("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\d+\"},\"content\":\" \"}", "null", BF_ON,
                  MERGES_STR, "regex '\\d+'");
    expect_reject("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"(?m).\"},\"content\":\" \"}", "null", BF_ON,
                  MERGES_STR, "regex '(?m).'");
}

Test(tokenizer_reject, merge_outside_vocab_and_malformed_merge) {
    expect_reject(LLAMA_NORM, "null", BF_ON, "[\"a x\"]", "not in the vocab");
    expect_reject(LLAMA_NORM, "null", BF_ON, "[\"abc\"]", "merge 0");
    expect_reject(LLAMA_NORM, "null", BF_ON ",\"continuing_subword_prefix\":\"##\"", MERGES_STR,
                  "continuing_subword_prefix");
}

Test(tokenizer_reject, bad_json_missing_file_and_wordpiece) {
    char dir[64], path[128], err[AX_ERR_LEN] = "";
    ae_tokenizer *t = NULL;
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    cr_assert_neq(ae_tokenizer_load(path, &t, err), 0);
    cr_assert_not_null(strstr(err, path), "%s", err);
    FILE *f = fopen(path, "w");
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [", f);   /* truncated */
    fclose(f);
    cr_assert_neq(ae_tokenizer_load(path, &t, err), 0);
    cr_assert_not_null(strstr(err, "not valid JSON"), "%s", err);
    f = fopen(path, "w");
    fputs("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", f);
    fclose(f);
    cr_assert_neq(ae_tokenizer_load(dir, &t, err), 0);   /* a folder means its tokenizer.json */
    cr_assert_not_null(strstr(err, "WordPiece"), "%s", err);
    cr_assert_null(t);
    rm_tree(dir);
}

/* ---- the real files ---------------------------------------------------------------------------- */

Test(tokenizer_llama2, hand_derived_small_cases) {
    ae_tokenizer *t = real("llama2-tokenizer");
    if (!t) return;
    cr_assert_eq(ae_tokenizer_vocab_size(t), 32000);
    /* "the" -> ▁ t h e. Ranks: (▁,t) 0, (h,e) 107, (t,h) 160. r0 -> ▁t h e, new pair (▁t,h) r6;
     * r6 -> ▁th e, new pair (▁th,e) r19; r19 -> ▁the = 278 (the other entries are stale). */
    EXPECT(t, "the", 1, 1, 278);
    /* digits: no merge of tokenizer.json contains a digit except three with '²' (checked with
     * python3 json), so "12345" -> "▁12345" = ▁ 29871, 1 29896, 2 29906, 3 29941, 4 29946, 5 29945 */
    EXPECT(t, "12345", 1, 1, 29871, 29896, 29906, 29941, 29946, 29945);
    /* newline: '\n' is not a piece -> <0x0A> = 13 (byte b -> 3 + b); "a\nb" -> "▁a\nb" =
     * ▁a 263, <0x0A> 13, b 29890 (no merge involves a byte piece) */
    EXPECT(t, "a\nb", 1, 1, 263, 13, 29890);
    /* leading spaces: "  x" -> "▁▁▁x". Pairs (▁,▁) r61129 at 0 and 1, (▁,x) r1177 at 2.
     * r1177 -> ▁ ▁ ▁x (921); r61129 at 0 -> ▁▁ (259) ▁x; the entry at 1 is stale; no merge
     * (▁▁,▁x). => 259, 921 */
    EXPECT(t, "  x", 0, 259, 921);
    /* non-ASCII through byte fallback: U+1F600 is not a piece -> 3 + {0xF0,0x9F,0x98,0x80};
     * "▁" before it stays alone (29871) */
    EXPECT(t, "\xf0\x9f\x98\x80", 0, 29871, 243, 162, 155, 131);
    /* a CJK character that IS a piece: 中 = 30275 */
    EXPECT(t, "\xe4\xb8\xad", 0, 29871, 30275);
    /* cross-checked with HF tokenizers 0.23.3: */
    EXPECT(t, "  Hello   world  ", 1, 1, 259, 15043, 259, 3186, 259);
    EXPECT(t, "\n\n = Robert Boulter = \n", 1, 1, 29871, 13, 13, 353, 4755, 350, 5059, 357, 353, 29871, 13);
    EXPECT(t, "na\xc3\xafve caf\xc3\xa9", 1, 1, 1055, 30085, 345, 274, 28059);
    EXPECT(t, "\t x", 1, 1, 29871, 12, 921);
    /* decoding: Strip removes the first leading space only */
    EXPECT_DECODE(t, "  Hello   world  ", 1, 259, 15043, 259, 3186, 259);
    EXPECT_DECODE(t, "\xf0\x9f\x98\x80", 29871, 243, 162, 155, 131);
    ae_tokenizer_free(t);
}

Test(tokenizer_stories260K, hand_derived_small_cases) {
    ae_tokenizer *t = real("stories260K");
    if (!t) return;
    cr_assert_eq(ae_tokenizer_vocab_size(t), 512);
    /* "the" -> ▁ t h e. Ranks: (▁,t) 0, (h,e) 1, (t,h) none. r0 -> ▁t h e (new pair (▁t,h) r51);
     * r1 -> ▁t he (new pair (▁t,he) r6); r6 -> ▁the = 265; (▁t,h) r51 is stale. */
    EXPECT(t, "the", 1, 1, 265);
    /* "  Hello   world  ": Strip + collapse -> "Hello world" -> "▁Hello▁world". Ranks among the
     * pairs: (▁,w) 4, (o,r) 47, (l,l) 49, (▁,H) 65, (l,d) 87, then (▁H,e) 92; none for (e,l),
     * (l,o), (o,▁), (w,o), (r,l), (e,ll), (▁He,ll), (ll,o), (o,▁w), (▁w,or), (or,ld).
     * => ▁He 346, ll 306, o 414, ▁w 263, or 304, ld 341 (same as "Hello world") */
    EXPECT(t, "  Hello   world  ", 1, 1, 346, 306, 414, 263, 304, 341);
    EXPECT(t, "Hello world", 1, 1, 346, 306, 414, 263, 304, 341);
    /* "naïve": ▁ n a ï v e; ï is not a piece -> <0xC3> 198, <0xAF> 178 (3 + byte); (▁,n) r40 ->
     * ▁n 297; (v,e) r109 -> ve 360; no merge (▁n,a), and no merge involves a byte piece.
     * => 297, 412 (a), 198, 178, 360 */
    EXPECT(t, "na\xc3\xafve", 0, 297, 412, 198, 178, 360);
    /* newline in the middle survives Strip: "a\nb" -> ▁a (r2) 261, <0x0A> 13, b 430 */
    EXPECT(t, "a\nb", 1, 1, 261, 13, 430);
    /* digits (no merge contains a digit): "12345" -> ▁ 410, 1 475, 2 479, 3 472, 4 484, 5 480 */
    EXPECT(t, "12345", 1, 1, 410, 475, 479, 472, 484, 480);
    /* leading / trailing whitespace is stripped: " x", "x ", "\t x" -> "▁x"; ▁x is no piece and
     * (▁,x) no merge -> ▁ 410, x 444 */
    EXPECT(t, " x", 1, 1, 410, 444);
    EXPECT(t, "x ", 1, 1, 410, 444);
    EXPECT(t, "\t x", 1, 1, 410, 444);
    ae_tokenizer_free(t);
}

/* WikiText-2 test as the GPTQ / lm-eval protocol builds it: "\n\n".join(HF rows), where the HF rows
 * are the file's lines WITH their "\n", and whitespace-only lines become "" (datasets' wikitext.py:
 * `row if row.strip() else ""`). (Joining the lines without their "\n" gives 340,044 ids with the
 * LLaMA-2 tokenizer and starts 1, 259, …: not the MANIFEST numbers.) */
static char *wikitext_joined(size_t *len) {
    char path[AX_PATH_LEN], err[AX_ERR_LEN];
    if (ax_data_file("data/wikitext-2-raw/wiki.test.raw", NULL, path, sizeof path, err)) {
        cr_skip_test("skipped: no data root with data/wikitext-2-raw/wiki.test.raw (%s)", err);
        return NULL;
    }
    char *raw = NULL;
    size_t n = 0;
    cr_assert_eq(ax_read_file(path, &raw, &n, err), 0, "%s", err);
    char *out = malloc(2 * n + 16);
    cr_assert_not_null(out);
    size_t o = 0;
    int first = 1;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && raw[j] != '\n') j++;
        size_t e = j < n ? j + 1 : j;   /* the row keeps its "\n" */
        int blank = 1;
        for (size_t k = i; k < e; k++)
            if (!strchr(" \t\n\r\v\f", raw[k])) { blank = 0; break; }
        if (!first) { out[o++] = '\n'; out[o++] = '\n'; }
        first = 0;
        if (!blank) { memcpy(out + o, raw + i, e - i); o += e - i; }
        i = e;
    }
    free(raw);
    out[o] = 0;
    *len = o;
    return out;
}

Test(tokenizer_wikitext, llama2_matches_manifest_count_and_first_ids) {
    ae_tokenizer *t = real("llama2-tokenizer");
    if (!t) return;
    size_t len = 0;
    char *text = wikitext_joined(&len);
    if (!text) { ae_tokenizer_free(t); return; }
    int *ids = NULL;
    size_t n = 0;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_tokenize(t, text, len, 1, &ids, &n, err), 0, "%s", err);
    /* shared/models/MANIFEST.md: 341,469 ids including BOS; first 1, 29871, 13, 13, 353, 4755,
     * 350, 5059, 357, 353 */
    cr_assert_eq(n, 341469);
    const int first[10] = {1, 29871, 13, 13, 353, 4755, 350, 5059, 357, 353};
    for (int i = 0; i < 10; i++) cr_assert_eq(ids[i], first[i], "id[%d] = %d", i, ids[i]);
    /* property: every character is representable (pieces or bytes), so decode(encode(x)) == x
     * (the decoder's Strip removes the ▁ that Prepend added) */
    char *back = ae_detokenize(t, ids, n);
    cr_assert_not_null(back);
    cr_assert_eq(strlen(back), len);
    cr_assert(memcmp(back, text, len) == 0, "decode(encode(WikiText-2)) differs from the text");
    free(back);
    free(ids);
    free(text);
    ae_tokenizer_free(t);
}

Test(tokenizer_wikitext, stories260K_matches_manifest_count) {
    ae_tokenizer *t = real("stories260K");
    if (!t) return;
    size_t len = 0;
    char *text = wikitext_joined(&len);
    if (!text) { ae_tokenizer_free(t); return; }
    int *ids = NULL;
    size_t n = 0;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_tokenize(t, text, len, 1, &ids, &n, err), 0, "%s", err);
    cr_assert_eq(n, 815059);   /* shared/models/MANIFEST.md, HF tokenizers */
    cr_assert_eq(ids[0], 1);
    free(ids);
    free(text);
    ae_tokenizer_free(t);
}

Test(tokenizer_cli, tokenize_prints_ids_and_rejects_bad_usage) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) { cr_skip_test("skipped: APEX4_BIN not set (run through make test)"); return; }
    char path[AX_PATH_LEN], err[AX_ERR_LEN], cmd[AX_PATH_LEN * 2], line[256] = "";
    if (ax_data_file("models/stories260K", NULL, path, sizeof path, err)) {
        cr_skip_test("skipped: no data root (%s)", err);
        return;
    }
    /* same ids as tokenizer_stories260K.hand_derived_small_cases ("the" -> 1 265) */
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer '%s' --text 'the' 2>/dev/null", bin, path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    cr_assert_not_null(fgets(line, sizeof line, p));
    cr_assert_eq(pclose(p), 0);
    cr_assert_str_eq(line, "1 265\n");
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer '%s' --decode --text '1 265' 2>/dev/null", bin, path);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    cr_assert_not_null(fgets(line, sizeof line, p));
    cr_assert_eq(pclose(p), 0);
    cr_assert_str_eq(line, "the\n");
    snprintf(cmd, sizeof cmd, "'%s' tokenize --bogus >/dev/null 2>&1", bin);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "usage error must exit 2");
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer /nonexistent/tokenizer.json --text x >/dev/null 2>&1", bin);
    rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "missing file must exit 2");
}

/* ---- regex Replace normalizer: code points, as HF tokenizers (issue items 1 and 2) -------------- */

/* Expected ids computed ONCE with HF tokenizers 0.23.3 (independent implementation, Oniguruma
 * regexes) by this script, whose output lines are pasted below:
 *   from tokenizers import Tokenizer, models, normalizers, Regex
 *   vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{"<0x%02X>" % b: 3 + b for b in range(256)}, "▁": 259,
 *            "a": 260, "b": 261, "c": 262, "ab": 263, "bc": 264, "▁a": 265, "abc": 266, "aa": 267, "ca": 268}
 *   merges = [("b", "c"), ("a", "b"), ("▁", "a"), ("a", "bc"), ("a", "a")]
 *   t = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
 *   t.normalizer = normalizers.Sequence([normalizers.Replace(Regex(P), C), normalizers.Prepend("▁"),
 *                                        normalizers.Replace(" ", "▁")])
 *   print(t.encode(TEXT, add_special_tokens=False).ids)
 * (= synth_ex() with that normalizer; P below is JSON-escaped as it appears in the file). */
typedef struct { const char *pattern_json, *content, *text; size_t n; int ids[16]; } regex_case;
static const regex_case REGEX_CASES[] = {
    /* the case: 'ï' is ONE code point -> one "c" (bytes would give two) */
    {"[^ab ]", "c", "na\xc3\xafve ab", 8, {259, 262, 260, 262, 262, 262, 259, 263}},
    {"[^ab ]", "c", "\xc3\xa9 \xc3\x9f \xe4\xb8\xad \xf0\x9f\x98\x80\xc2\xa0" "b", 10, {259, 262, 259, 262, 259, 262, 259, 262, 262, 261}},
    {".", "a", "a\xc3\xa9\xf0\x9f\x98\x80", 2, {265, 267}},
    {"\\\\s+", " ", "a\xc2\xa0" "b\xe1\xa0\x8e" "c\xc2\x85\xe3\x80\x80" "a  b", 10, {265, 259, 261, 228, 163, 145, 262, 265, 259, 261}},
    {"x*", "b", "ab a", 8, {259, 261, 263, 261, 261, 259, 261, 263}},
    {"a\?", "c", "bab", 4, {259, 262, 264, 264}},
    {"^a|b$", "c", "ab\nba\nab", 9, {259, 262, 262, 13, 261, 260, 13, 262, 262}},
    {"(\?:ab)+\?", "c", "ababab", 4, {259, 262, 262, 262}},
    {"[a-b]{2,3}", "c", "aaaab \xc3\xaf" "ab", 7, {259, 262, 262, 259, 198, 178, 262}},
    {"a{1,32767}", "b", "aaa caaaab", 6, {259, 261, 259, 262, 261, 261}},
    {"\\\\.|\\\\\?", "a", "a.b\?c", 4, {265, 263, 260, 262}},
    {"(\?=b)", "a", "abcb", 3, {265, 266, 263}},
    {"[^\\\\sa]", "b", "a \xc3\xa9\xc2\xa0" "c", 6, {265, 259, 261, 197, 163, 261}},
};

Test(tokenizer_regex, replace_matches_code_points_like_hf_tokenizers) {
    for (size_t k = 0; k < sizeof REGEX_CASES / sizeof REGEX_CASES[0]; k++) {
        const regex_case *c = &REGEX_CASES[k];
        char norm[512];
        snprintf(norm, sizeof norm,
                 "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"%s\"},"
                 "\"content\":\"%s\"},{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},{\"type\":\"Replace\","
                 "\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]}", c->pattern_json, c->content);
        ae_tokenizer *t = synth_ex(norm, "null", BF_ON, MERGES_STR, NULL);
        expect_ids(t, c->text, 0, c->ids, c->n);
        ae_tokenizer_free(t);
    }
}

static ae_tokenizer *regex_tok(const char *pattern_json, char *err) {
    char norm[4096];
    snprintf(norm, sizeof norm, "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"%s\"},\"content\":\"b\"}", pattern_json);
    return synth_ex(norm, "null", BF_ON, MERGES_STR, err);
}

Test(tokenizer_regex, pathological_patterns_cost_bounded_time_and_memory) {
    /* a{1,32767}: glibc regcomp took 25 s and 8.4 GB; HF loads it at once. PCRE2 keeps a repeated
     * single item as one counted opcode: loads at once and works (ids in the table above). */
    double t0 = ax_now();
    char err[AX_ERR_LEN] = "";
    ae_tokenizer *t = regex_tok("a{1,32767}", err);
    cr_assert_not_null(t, "%s", err);
    /* "aaab" -> "bb" (one match for the run of a's); no normalizer Prepend here: b b = 261 261 */
    EXPECT(t, "aaab", 0, 261, 261);
    ae_tokenizer_free(t);
    /* rejected at once, naming the pattern: a repeated GROUP is copied by PCRE2 (30000 copies), nested
     * repeats multiply, counts above PCRE2's 65535, patterns over 1024 bytes */
    const char *bad[] = {"(ab){1,30000}", "((a{1,100}){1,100}){1,100}", "a{1,100000}", "(?:(?:(?:a|b){50}){50}){50}"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char needle[128];
        snprintf(needle, sizeof needle, "regex '%s'", bad[k]);
        cr_assert_null(regex_tok(bad[k], err), "%s should be rejected", bad[k]);
        cr_assert_not_null(strstr(err, needle), "'%s' should name the pattern", err);
        cr_assert_not_null(strstr(err, "tokenizer.json"), "'%s' should name the file", err);
    }
    char lng[1200];
    memset(lng, 'a', 1100);
    lng[1100] = 0;
    cr_assert_null(regex_tok(lng, err));
    cr_assert_not_null(strstr(err, "longer than 1024 bytes"), "%s", err);
    /* all of the above: well under a second each even under ASan (was 25 s for one) */
    cr_assert_lt(ax_now() - t0, 5.0, "pathological patterns took %.1f s", ax_now() - t0);
}

Test(tokenizer_regex, catastrophic_backtracking_fails_with_a_message_not_a_hang) {
    /* (a|a)*x on 30 a's then "!x": 2^30 ways to split the a's before failing at '!'; PCRE2's match
     * limit stops it: an error naming the pattern, not a hang and not a silently different text */
    char err[AX_ERR_LEN] = "";
    ae_tokenizer *t = regex_tok("(a|a)*x", err);
    cr_assert_not_null(t, "%s", err);
    const char *text = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!x";
    int *ids = NULL;
    size_t n = 0;
    double t0 = ax_now();
    cr_assert_neq(ae_tokenize(t, text, strlen(text), 0, &ids, &n, err), 0);
    cr_assert_lt(ax_now() - t0, 10.0);
    cr_assert_null(ids);
    cr_assert_not_null(strstr(err, "regex '(a|a)*x'"), "%s", err);
    cr_assert_not_null(strstr(err, "limit"), "%s", err);
    ae_tokenizer_free(t);
}

Test(tokenizer_regex, constructs_read_differently_by_oniguruma_are_rejected) {
    /* each of these means something else in Ruby-syntax Oniguruma than in PCRE2 (checked with
     * tokenizers 0.23.3: a{2}? on "aaa" gives "xax" (optional interval), a{1,2}+ repeats the
     * interval, {,2} is {0,2}, \h is a hex digit, [a&&b] intersects, (?m) is dot-all) */
    const char *bad[] = {"a{2}?", "a{1,2}+", "a{,2}", "\\\\h", "[a-z&&[^aeiou]]", "(?m).", "\\\\w", "\\\\p{L}",
                         "\\\\x41", "a**", "[[:alpha:]]", "a]", "(?<=a)b", "\\\\1",
                         /* a repeated group that can match "": a random differential run against tokenizers
                          * found (?:(?:a{2}^a{0,2}|^a*){1,3}){2} ending its loop differently */
                         "(a*)+", "(?:^|b)*", "(?:(?:a{2}^a{0,2}|^a*){1,3}){2}"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char err[AX_ERR_LEN] = "";
        cr_assert_null(regex_tok(bad[k], err), "'%s' should be rejected", bad[k]);
        cr_assert_not_null(strstr(err, "normalizer Replace regex"), "%s", err);
    }
}

/* Real tokenizers on non-ASCII text (é, ß, CJK, emoji, U+00A0, U+3000): ids computed ONCE with
 *   python3 -c 'from tokenizers import Tokenizer; t = Tokenizer.from_file("<data root>/models/M/tokenizer.json");
 *               print(t.encode(TEXT).ids)'
 * (tokenizers 0.23.3; M = llama2-tokenizer, stories260K). stories260K's normalizer has the regex
 * Replace " {2,}" -> " ", so its cases exercise the regex on multi-byte text. */
typedef struct { const char *text; size_t n; int ids[32]; } real_case;
static const real_case LLAMA2_CASES[] = {
    {"caf\xc3\xa9", 3, {1, 274, 28059}},
    {"Stra\xc3\x9f" "e", 2, {1, 22667}},
    {"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6", 6, {1, 29871, 30275, 30333, 30578, 31277}},
    {"\xf0\x9f\x98\x80 emoji", 9, {1, 29871, 243, 162, 155, 131, 953, 29877, 2397}},
    {"a\xc2\xa0" "b", 4, {1, 263, 30081, 29890}},
    {"na\xc3\xafve  r\xc3\xa9sum\xc3\xa9", 8, {1, 1055, 30085, 345, 29871, 6896, 398, 29948}},
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88", 10, {1, 29871, 30325, 30346, 30968, 30199, 30572, 30454, 30255, 30279}},
    {"\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9\xc2\xa0 \xc3\x9f", 10, {1, 7189, 29876, 30085, 29883, 9289, 29948, 30081, 29871, 30034}},
    {"  na\xc3\xafve   caf\xc3\xa9\xc2\xa0\xc2\xa0 ok  ", 11, {1, 259, 1055, 30085, 345, 259, 274, 28059, 8655, 3431, 259}},
    {"\xf0\x9f\x98\x80  \xf0\x9f\x98\x80\xe3\x80\x80x", 13, {1, 29871, 243, 162, 155, 131, 259, 243, 162, 155, 131, 30358, 29916}},
};
static const real_case STORIES_CASES[] = {
    {"caf\xc3\xa9", 5, {1, 280, 412, 431, 485}},
    {"Stra\xc3\x9f" "e", 8, {1, 301, 413, 420, 412, 198, 162, 411}},
    {"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6", 14, {1, 410, 231, 187, 176, 233, 153, 138, 232, 176, 154, 234, 175, 169}},
    {"\xf0\x9f\x98\x80 emoji", 11, {1, 410, 243, 162, 155, 131, 344, 423, 414, 449, 417}},
    {"a\xc2\xa0" "b", 4, {1, 261, 498, 430}},
    {"na\xc3\xafve  r\xc3\xa9sum\xc3\xa9", 12, {1, 297, 412, 198, 178, 360, 352, 485, 419, 425, 423, 485}},
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88", 26, {1, 410, 233, 154, 168, 233, 159, 175, 235, 173, 161, 230, 132, 177, 230, 134, 137, 230, 133, 176, 230, 133, 188, 230, 134, 139}},
    {"\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9\xc2\xa0 \xc3\x9f", 16, {1, 410, 198, 159, 416, 198, 178, 429, 198, 185, 418, 485, 498, 410, 198, 162}},
    {"  na\xc3\xafve   caf\xc3\xa9\xc2\xa0\xc2\xa0 ok  ", 14, {1, 297, 412, 198, 178, 360, 280, 412, 431, 485, 498, 498, 334, 433}},
    {"\xf0\x9f\x98\x80  \xf0\x9f\x98\x80\xe3\x80\x80x", 15, {1, 410, 243, 162, 155, 131, 410, 243, 162, 155, 131, 230, 131, 131, 444}},
};
static void expect_real(const char *model, const real_case *cases, size_t n_cases) {
    ae_tokenizer *t = real(model);
    if (!t) return;
    for (size_t k = 0; k < n_cases; k++) expect_ids(t, cases[k].text, 1, cases[k].ids, cases[k].n);
    ae_tokenizer_free(t);
}
Test(tokenizer_llama2, non_ascii_matches_hf_tokenizers) {
    expect_real("llama2-tokenizer", LLAMA2_CASES, sizeof LLAMA2_CASES / sizeof LLAMA2_CASES[0]);
}
Test(tokenizer_stories260K, non_ascii_matches_hf_tokenizers) {
    expect_real("stories260K", STORIES_CASES, sizeof STORIES_CASES / sizeof STORIES_CASES[0]);
}

/* ---- strict JSON and typed fields (issue item 3) ----------------------------------------------- */

/* Write `text` as <tmp>/tokenizer.json and load it; the tokenizer, or NULL with err filled. */
static ae_tokenizer *load_text(const char *text, size_t len, char *err) {
    char dir[64], path[128];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    ae_tokenizer *t = NULL;
    err[0] = 0;
    int rc = ae_tokenizer_load(path, &t, err);
    rm_tree(dir);
    cr_assert_eq(rc != 0, t == NULL);
    return t;
}

/* A minimal tokenizer: vocab a 0, b 1, ab 2, merge "a b"; no normalizer, no BOS. */
#define MINI(added, vocab_extra, model_extra, tail)                                                      \
    "{\"added_tokens\":[" added "],\"normalizer\":null,\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,"  \
    "\"b\":1,\"ab\":2" vocab_extra "},\"merges\":[\"a b\"]" model_extra "}}" tail

static void expect_bad(const char *text, const char *needle1, const char *needle2) {
    char err[AX_ERR_LEN];
    ae_tokenizer *t = load_text(text, strlen(text), err);
    cr_assert_null(t, "expected a load error mentioning '%s' for %s", needle1, text);
    cr_assert_not_null(strstr(err, "tokenizer.json"), "error '%s' should name the file", err);
    cr_assert_not_null(strstr(err, needle1), "error '%s' should mention '%s'", err, needle1);
    if (needle2) cr_assert_not_null(strstr(err, needle2), "error '%s' should mention '%s'", err, needle2);
}

Test(tokenizer_json, minimal_file_loads_and_has_no_bos) {
    /* positive control for the cases below: "ab" -> a b -> merge 0 -> ab = 2 */
    char err[AX_ERR_LEN];
    const char *text = MINI("", "", "", "\n");
    ae_tokenizer *t = load_text(text, strlen(text), err);
    cr_assert_not_null(t, "%s", err);
    EXPECT(t, "ab", 0, 2);
    /* no "<s>" and no post_processor: asking for BOS names the file and says what is missing */
    int *ids = NULL;
    size_t n = 0;
    cr_assert_neq(ae_tokenize(t, "ab", 2, 1, &ids, &n, err), 0);
    cr_assert_not_null(strstr(err, "tokenizer.json: no BOS token"), "%s", err);
    ae_tokenizer_free(t);
}

Test(tokenizer_json, duplicate_keys_and_trailing_garbage_are_rejected) {
    expect_bad(MINI("", ",\"a\":3", "", ""), "duplicate key \"a\"", NULL);
    expect_bad(MINI("", "", ",\"byte_fallback\":true,\"byte_fallback\":false", ""), "duplicate key \"byte_fallback\"", NULL);
    expect_bad(MINI("", "", "", " {}"), "trailing data", NULL);
    expect_bad(MINI("", "", "", "x"), "trailing data", NULL);
    expect_bad("[1, 2]", "expected a JSON object", NULL);
    /* not UTF-8 (HF reads the file as a Rust String): a 0xFF byte inside a piece */
    expect_bad(MINI("", ",\"\xff\":3", "", ""), "not valid UTF-8 at byte offset", NULL);
}

Test(tokenizer_json, wrong_types_and_ranges_of_ids_are_rejected) {
    /* added-token ids: integers only */
    expect_bad(MINI("{\"id\":3.5,\"content\":\"<s>\"}", "", "", ""), "added_tokens[0].id", "expected an integer");
    expect_bad(MINI("{\"id\":\"3\",\"content\":\"<s>\"}", "", "", ""), "added_tokens[0].id", "got a string");
    expect_bad(MINI("{\"id\":-1,\"content\":\"<s>\"}", "", "", ""), "added_tokens[0].id", "expected an integer in [0, ");
    expect_bad(MINI("{\"content\":\"<s>\"}", "", "", ""), "added_tokens[0].id", "the key is missing");
    expect_bad(MINI("{\"id\":3,\"content\":7}", "", "", ""), "added_tokens[0].\"content\"", "expected a string");
    expect_bad(MINI("{\"id\":3,\"content\":\"<s>\",\"special\":1}", "", "", ""), "\"special\"", "expected true or false");
    /* two added tokens with one id, and an added token re-using a vocab id with other text */
    expect_bad(MINI("{\"id\":3,\"content\":\"<s>\"},{\"id\":3,\"content\":\"</s>\"}", "", "", ""),
               "added_tokens[1].id 3 is already the id of added_tokens[0]", NULL);
    expect_bad(MINI("{\"id\":3,\"content\":\"<s>\"},{\"id\":3,\"content\":\"<s>\"}", "", "", ""),
               "added_tokens[1].id 3 is already the id of added_tokens[0]", NULL);
    expect_bad(MINI("{\"id\":1,\"content\":\"<s>\"}", "", "", ""), "id 1 is given to two pieces", NULL);
    /* vocab ids: integers in [0, INT_MAX - 1], each once */
    expect_bad(MINI("", ",\"c\":1.5", "", ""), "model.vocab[\"c\"]", "expected an integer");
    expect_bad(MINI("", ",\"c\":\"3\"", "", ""), "model.vocab[\"c\"]", "got a string");
    expect_bad(MINI("", ",\"c\":-3", "", ""), "model.vocab[\"c\"]", "expected an integer in [0, 2147483646], got -3");
    expect_bad(MINI("", ",\"c\":3000000000", "", ""), "model.vocab[\"c\"]", "got 3000000000");
    expect_bad(MINI("", ",\"c\":2147483647", "", ""), "model.vocab[\"c\"]", "expected an integer");
    expect_bad(MINI("", ",\"c\":1e300", "", ""), "model.vocab[\"c\"]", "expected an integer");
    expect_bad(MINI("", ",\"c\":1", "", ""), "model.vocab: id 1 is given to two pieces", NULL);
    /* a huge id with few pieces would size the id -> piece table: rejected before allocating */
    expect_bad(MINI("", ",\"c\":2000000000", "", ""), "ids are not dense", NULL);
    /* flags and strings of the model */
    expect_bad(MINI("", "", ",\"byte_fallback\":\"yes\"", ""), "model.\"byte_fallback\"", "expected true or false");
    expect_bad(MINI("", "", ",\"unk_token\":0", ""), "model.\"unk_token\"", "expected a string");
    expect_bad(MINI("", "", ",\"continuing_subword_prefix\":5", ""), "model.\"continuing_subword_prefix\"", "expected a string");
    expect_bad("{\"model\":{\"type\":[],\"vocab\":{\"a\":0},\"merges\":[]}}", "model.\"type\"", "expected a string");
    expect_bad("{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", "\"vocab\" (an object: got an array)", NULL);
    expect_bad("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", "\"merges\" (an array: got an object)", NULL);
}

Test(tokenizer_json, wrong_types_in_normalizer_and_decoder_are_rejected) {
    expect_bad("{\"normalizer\":{\"type\":\"Strip\",\"strip_left\":\"no\"}," "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "normalizer 0 \"strip_left\"", "expected true or false");
    expect_bad("{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":1},\"content\":\"x\"},"
               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "Replace \"pattern\"", "expected {\"String\": s} or {\"Regex\": s}");
    expect_bad("{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":{}},"
               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "normalizer Sequence \"normalizers\"", "expected an array");
    expect_bad("{\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":1.5,\"stop\":0},"
               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "decoder 0 Strip \"start\"", "expected an integer");
    expect_bad("{\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":\"0\"},"
               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "decoder 0 Strip \"stop\"", "got a string");
    expect_bad("{\"decoder\":[],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
               "\"decoder\": expected an object or null", NULL);
}

/* ---- byte-level vocab without its ByteLevel parts (issue item 4) ------------------------------ */

Test(tokenizer_reject, byte_level_vocab_without_byte_level_pre_tokenizer) {
    /* GPT-2's bytes_to_unicode (openai/gpt-2 encoder.py): printable Latin-1 bytes stand for
     * themselves, the other 68 bytes for U+0100.. in byte order ('Ġ' U+0120 = space). The vocab holds
     * the 256 stand-ins plus "Ġa"; the ByteLevel pre-tokenizer and decoder were removed. */
    char *text = malloc(16384);
    cr_assert_not_null(text);
    size_t o = (size_t)sprintf(text, "{\"pre_tokenizer\":null,\"decoder\":null,\"model\":{\"type\":\"BPE\","
                                     "\"vocab\":{");
    int k = 0;
    for (int b = 0; b < 256; b++) {
        unsigned cp = (unsigned)b;
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) cp = 0x100u + (unsigned)k++;
        char u[8];
        if (cp == '"' || cp == '\\') snprintf(u, sizeof u, "\\%c", (char)cp);
        else if (cp < 0x80) snprintf(u, sizeof u, "%c", (char)cp);
        else snprintf(u, sizeof u, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
        o += (size_t)sprintf(text + o, "%s\"%s\":%d", b ? "," : "", u, b);
    }
    cr_assert_eq(k, 68);
    sprintf(text + o, ",\"\xc4\xa0" "a\":256},\"merges\":[\"\xc4\xa0 a\"]}}");
    expect_bad(text, "byte-level", "ByteLevel pre-tokenizer");
    free(text);
}


/* ---- apex4 tokenize: stdin label, id parsing (issue item 5) ----------------------------------- */

/* Run `cmd` (sh), capture stdout+stderr into out; returns the exit status. */
static int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

Test(tokenizer_cli, stdin_is_labelled_and_decode_ids_are_range_checked) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) { cr_skip_test("skipped: APEX4_BIN not set (run through make test)"); return; }
    char dir[64], path[128], cmd[1024], out[4096];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(MINI("", "", "", "\n"), f);   /* a 0, b 1, ab 2, merge "a b"; no BOS */
    fclose(f);
    /* stdin: "ab" -> 2 */
    snprintf(cmd, sizeof cmd, "printf 'ab' | '%s' tokenize --tokenizer '%s' --no-bos 2>/dev/null", bin, path);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 0);
    cr_assert_str_eq(out, "2\n");
    /* errors about stdin text say <stdin>, not --text */
    snprintf(cmd, sizeof cmd, "printf 'a\\377' | '%s' tokenize --tokenizer '%s' --no-bos 2>&1", bin, path);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 2);
    cr_assert_not_null(strstr(out, "<stdin>: text is not valid UTF-8 at byte offset 1"), "%s", out);
    cr_assert_null(strstr(out, "--text"), "%s", out);
    /* ...and BOS requested from a tokenizer without one names the tokenizer file */
    snprintf(cmd, sizeof cmd, "printf 'ab' | '%s' tokenize --tokenizer '%s' 2>&1", bin, path);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 2);
    cr_assert_not_null(strstr(out, "<stdin>"), "%s", out);
    cr_assert_not_null(strstr(out, "tokenizer.json: no BOS token"), "%s", out);
    /* --decode: ids separated by spaces / commas / newlines, each in [0, 3) */
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer '%s' --decode --text '2, 0 1' 2>/dev/null", bin, path);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 0);
    cr_assert_str_eq(out, "ab a b\n");   /* no decoder: HF joins the pieces with spaces */
    const char *bad[] = {"99999999999999999999999", "-1", "3", "2x", "+", "0x1"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer '%s' --decode --text '1 %s' 2>&1", bin, path, bad[k]);
        cr_assert_eq(run_cmd(cmd, out, sizeof out), 2, "'%s' must be rejected: %s", bad[k], out);
        char needle[128];
        snprintf(needle, sizeof needle, "--decode (--text), id #2: expected an integer in [0, 2], got '%s'", bad[k]);
        cr_assert_not_null(strstr(out, needle), "'%s' should contain '%s'", out, needle);
    }
    /* ids from stdin: the message says <stdin> */
    snprintf(cmd, sizeof cmd, "printf '1\\n7' | '%s' tokenize --tokenizer '%s' --decode 2>&1", bin, path);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 2);
    cr_assert_not_null(strstr(out, "--decode (<stdin>), id #2"), "%s", out);
    rm_tree(dir);
}
