/* test_zeroshot.c — zero-shot tasks: request building per task (expected strings written out by
 * hand from the lm-eval task files), --limit, data file errors (hostile input: NUL bytes, invalid
 * UTF-8, strict JSON, wrong key types, empty labels files), scoring and normalisation on hand-made
 * logits, the request loop against a naive reference on a fake LM (packing budgets too), packing on
 * the cpu engine (stories260K: one sequence per call = one big pack), the _encode_pair
 * split on the LLaMA-2 tokenizer (Unicode trailing whitespace too), an end-to-end run on
 * stories260K, --log-samples, and the CLI's option checks. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ak.h"
#include "ax_util.h"
#include "engine.h"
#include "model.h"
#include "testutil.h"
#include "zeroshot.h"

/* ---- helpers ----------------------------------------------------------------------------------- */
/* root/rel <- n bytes (NUL bytes included); parent folders created */
static void write_bytes(const char *root, const char *rel, const char *bytes, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = strchr(p + strlen(root) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    FILE *f = fopen(p, "wb");
    cr_assert(f, "cannot create %s", p);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

static void write_file(const char *root, const char *rel, const char *text) {
    write_bytes(root, rel, text, strlen(text));
}

static void rm_rf(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static ad_zs_set *load_ok(const char *task, const char *root, long limit) {
    char err[AX_ERR_LEN] = "";
    ad_zs_set *s = NULL;
    int rc = ad_zs_load(ad_zs_task_find(task), root, limit, &s, err);
    cr_assert_eq(rc, 0, "%s: %s", task, err);
    return s;
}

static void expect_req(const ad_zs_set *s, int d, int j, const char *ctx, const char *cont) {
    cr_assert_lt(d, s->n_docs);
    cr_assert_lt(j, s->docs[d].n_req);
    cr_expect_str_eq(s->docs[d].req[j].context, ctx, "doc %d choice %d context", d, j);
    cr_expect_str_eq(s->docs[d].req[j].continuation, cont, "doc %d choice %d continuation", d, j);
}

/* ---- request building, one test per task --------------------------------------------------------- */
Test(zeroshot_requests, piqa) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"How do I dry a shirt?\", \"sol1\": \"Hang it up.\", \"sol2\": \"Put it in soup.\"}\n"
               "{\"goal\": \"dresser\", \"sol1\": \"replace drawer \", \"sol2\": \"caf\\u00e9 with  pin \"}\n");
    write_file(root, "data/piqa/valid-labels.lst", "0\n1\n");
    ad_zs_set *s = load_ok("piqa", root, 0);
    cr_assert_eq(s->n_docs, 2);
    /* piqa.yaml: "Question: {{goal}}\nAnswer:", choices [sol1, sol2], target delimiter " " */
    expect_req(s, 0, 0, "Question: How do I dry a shirt?\nAnswer:", " Hang it up.");
    expect_req(s, 0, 1, "Question: How do I dry a shirt?\nAnswer:", " Put it in soup.");
    expect_req(s, 1, 0, "Question: dresser\nAnswer:", " replace drawer ");
    expect_req(s, 1, 1, "Question: dresser\nAnswer:", " caf\xc3\xa9 with  pin ");
    cr_expect_eq(s->docs[0].gold, 0);
    cr_expect_eq(s->docs[1].gold, 1);
    /* acc_norm lengths: len("Hang it up.") = 11, len("café with  pin ") = 15 code points */
    cr_expect_eq(s->docs[0].choice_len[0], 11.0);
    cr_expect_eq(s->docs[1].choice_len[1], 15.0);
    cr_expect_eq(s->n_requests, 4);
    ad_zs_set_free(s);
    rm_rf(root);
}

Test(zeroshot_requests, arc_original_and_numeric_labels) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/arc_easy/ARC-Easy-Test.jsonl",
               "{\"id\":\"a\",\"question\":{\"stem\":\"Which is a gas?\",\"choices\":[{\"text\":\"ice\",\"label\":\"A\"},"
               "{\"text\":\"steam\",\"label\":\"B\"},{\"text\":\"rock\",\"label\":\"C\"}]},\"answerKey\":\"B\"}\n"
               "{\"id\":\"NYSEDREGENTS_2015_8_1\",\"question\":{\"stem\":\"Pick 3.\",\"choices\":[{\"text\":\"one\",\"label\":\"1\"},"
               "{\"text\":\"two\",\"label\":\"2\"},{\"text\":\"three\",\"label\":\"3\"},{\"text\":\"four\",\"label\":\"4\"}]},\"answerKey\":\"3\"}\n");
    ad_zs_set *s = load_ok("arc_easy", root, 0);
    cr_assert_eq(s->n_docs, 2);
    /* arc_easy.yaml: "Question: {{question}}\nAnswer:", choices.text, gold = label.index(answerKey) */
    expect_req(s, 0, 0, "Question: Which is a gas?\nAnswer:", " ice");
    expect_req(s, 0, 1, "Question: Which is a gas?\nAnswer:", " steam");
    expect_req(s, 0, 2, "Question: Which is a gas?\nAnswer:", " rock");
    cr_expect_eq(s->docs[0].n_req, 3);
    cr_expect_eq(s->docs[0].gold, 1);
    expect_req(s, 1, 3, "Question: Pick 3.\nAnswer:", " four");
    cr_expect_eq(s->docs[1].gold, 2);   /* "3" is the third label */
    ad_zs_set_free(s);
    rm_rf(root);
}

Test(zeroshot_requests, boolq) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    /* Google's dev.jsonl form (title, passage, answer) and SuperGLUE's form (passage already
     * "<title> -- <passage>", label true/false or 0/1, no title) */
    write_file(root, "data/boolq/dev.jsonl",
               "{\"question\": \"is the sky blue\", \"title\": \"Sky\", \"answer\": true, \"passage\": \"The sky is blue.\"}\n"
               "{\"question\": \"do fish fly\", \"title\": \"Fish\", \"answer\": false, \"passage\": \"Fish swim.\"}\n"
               "{\"question\": \"is it\", \"passage\": \"Sun -- It is hot.\", \"idx\": 2, \"label\": true}\n"
               "{\"question\": \"is it\", \"passage\": \"Moon -- It is cold.\", \"idx\": 3, \"label\": 0}\n");
    ad_zs_set *s = load_ok("boolq", root, 0);
    cr_assert_eq(s->n_docs, 4);
    /* boolq/default.yaml: "{{passage}}\nQuestion: {{question}}?\nAnswer:", choices ["no", "yes"], on
     * SuperGLUE's passage = title + " -- " + passage */
    expect_req(s, 0, 0, "Sky -- The sky is blue.\nQuestion: is the sky blue?\nAnswer:", " no");
    expect_req(s, 0, 1, "Sky -- The sky is blue.\nQuestion: is the sky blue?\nAnswer:", " yes");
    expect_req(s, 1, 1, "Fish -- Fish swim.\nQuestion: do fish fly?\nAnswer:", " yes");
    expect_req(s, 2, 0, "Sun -- It is hot.\nQuestion: is it?\nAnswer:", " no");
    expect_req(s, 3, 1, "Moon -- It is cold.\nQuestion: is it?\nAnswer:", " yes");
    cr_expect_eq(s->docs[0].gold, 1);
    cr_expect_eq(s->docs[1].gold, 0);
    cr_expect_eq(s->docs[2].gold, 1);
    cr_expect_eq(s->docs[3].gold, 0);
    ad_zs_set_free(s);
    rm_rf(root);
}

Test(zeroshot_requests, hellaswag_llamacpp_text) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/hellaswag/hellaswag_val_full.txt",
               "Roof shingle removal: A man is sitting on a roof. he\n3\n"
               "is using wrap to wrap a pair of skis.\nis ripping level tiles off.\n"
               "is holding a rubik's cube.\nstarts pulling up roofing on a roof.\n"
               "Clean and jerk: A lady walks to a barbell. the lady\n0\na\nb\nc\nd\n");
    ad_zs_set *s = load_ok("hellaswag", root, 0);
    cr_assert_eq(s->n_docs, 2);
    expect_req(s, 0, 0, "Roof shingle removal: A man is sitting on a roof. he", " is using wrap to wrap a pair of skis.");
    expect_req(s, 0, 3, "Roof shingle removal: A man is sitting on a roof. he", " starts pulling up roofing on a roof.");
    cr_expect_eq(s->docs[0].gold, 3);
    expect_req(s, 1, 2, "Clean and jerk: A lady walks to a barbell. the lady", " c");
    cr_expect_eq(s->docs[1].gold, 0);
    cr_expect(strstr(s->variant, "llama.cpp") != NULL, "variant says which format: %s", s->variant);
    ad_zs_set_free(s);
    rm_rf(root);
}

Test(zeroshot_requests, hellaswag_jsonl_preferred_with_harness_preprocessing) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/hellaswag/hellaswag_val_full.txt", "x: y\n0\na\nb\nc\nd\n");
    write_file(root, "data/hellaswag/hellaswag_val.jsonl",
               "{\"ind\": 24, \"activity_label\": \"Roof shingle removal\", \"ctx_a\": \"A man is sitting on a roof.\","
               " \"ctx_b\": \"he\", \"endings\": [\"is using wrap to wrap a pair of skis.\", \"is ripping level tiles off.\","
               " \"is holding a rubik's cube.\", \"starts pulling up roofing on a roof.\"], \"label\": 3}\n"
               "{\"activity_label\": \"Home and Garden\", \"ctx_a\": \"[header] How to paint a wall [title] Buy paint.\","
               " \"ctx_b\": \"then PAINT it\", \"endings\": [\"[step] Use a  roller.\", \" b \", \"c [substeps] x\", \"d\"], \"label\": \"1\"}\n");
    ad_zs_set *s = load_ok("hellaswag", root, 0);
    cr_assert_eq(s->n_docs, 2);
    /* utils.py: preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()) */
    expect_req(s, 0, 0, "Roof shingle removal: A man is sitting on a roof. He", " is using wrap to wrap a pair of skis.");
    cr_expect_eq(s->docs[0].gold, 3);
    /* by hand: "Home and Garden: [header] How to paint a wall [title] Buy paint. Then paint it"
     *  " [title]" -> ". "  : "Home and Garden: [header] How to paint a wall.  Buy paint. Then paint it"
     *  remove "[header]"   : "Home and Garden:  How to paint a wall.  Buy paint. Then paint it"
     *  "  " -> " "         : "Home and Garden: How to paint a wall. Buy paint. Then paint it" */
    /* "[step] Use a  roller.": strip (nothing), remove "[step]" -> " Use a  roller.", "  " -> " "
     * -> " Use a roller." (the space left by the tag stays: strip ran first) */
    expect_req(s, 1, 0, "Home and Garden: How to paint a wall. Buy paint. Then paint it", "  Use a roller.");
    expect_req(s, 1, 1, "Home and Garden: How to paint a wall. Buy paint. Then paint it", " b");
    expect_req(s, 1, 2, "Home and Garden: How to paint a wall. Buy paint. Then paint it", " c x");
    cr_expect_eq(s->docs[1].gold, 1);
    cr_expect_eq(s->docs[1].choice_len[0], 14.0);   /* " Use a roller." */
    cr_expect(strstr(s->variant, "lm-eval") != NULL, "variant: %s", s->variant);
    ad_zs_set_free(s);
    rm_rf(root);
}

Test(zeroshot_requests, winogrande_partial) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/winogrande/dev.jsonl",
               "{\"qID\": \"1\", \"sentence\": \"Sarah was a much better surgeon than Maria so _ always got the easier cases.\", "
               "\"option1\": \"Sarah\", \"option2\": \"Maria\", \"answer\": \"2\"}\n"
               "{\"qID\": \"2\", \"sentence\": \"The bed was ruined but the _  was fine. \", \"option1\": \"blanket\", "
               "\"option2\": \"bed\", \"answer\": \"1\"}\n");
    write_file(root, "data/winogrande/dev-labels.lst", "2\n1\n");
    ad_zs_set *s = load_ok("winogrande", root, 0);
    /* preprocess_winogrande.py: context = sentence[:idx] + option, target = sentence[idx+1:].strip(),
     * continuation = " " + target */
    expect_req(s, 0, 0, "Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases.");
    expect_req(s, 0, 1, "Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.");
    cr_expect_eq(s->docs[0].gold, 1);
    expect_req(s, 1, 0, "The bed was ruined but the blanket", " was fine.");
    expect_req(s, 1, 1, "The bed was ruined but the bed", " was fine.");
    cr_expect_eq(s->docs[1].gold, 0);
    ad_zs_set_free(s);
    rm_rf(root);
}

Test(zeroshot_requests, lambada_last_word) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/lambada_openai/lambada_test.jsonl",
               "{\"text\": \"He looked at the\\n\\nold dog\"}\n"
               "{\"text\": \"two  spaces\"}\n"
               "{\"text\": \"alone\"}\n");
    ad_zs_set *s = load_ok("lambada_openai", root, 0);
    cr_assert_eq(s->n_docs, 3);
    /* lambada_openai.yaml: text.split(' ')[:-1] joined by ' ', target ' ' + text.split(' ')[-1] */
    expect_req(s, 0, 0, "He looked at the\n\nold", " dog");
    expect_req(s, 1, 0, "two ", " spaces");   /* ['two', '', 'spaces'] -> "two " */
    expect_req(s, 2, 0, "", " alone");
    ad_zs_set_free(s);
    rm_rf(root);
}

/* ---- the real files: counts from data/MANIFEST.md ------------------------------------------------ */
Test(zeroshot_data, real_files_match_the_manifest) {
    char root[AX_PATH_LEN], err[AX_ERR_LEN];
    if (ax_data_root(root, sizeof root, err)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    /* MANIFEST.md: records; requests = Σ choices (ARC-Easy: 2365×4 + 7×3 + 4×5 = 9501,
     * ARC-Challenge: 1165×4 + 4×3 + 3×5 = 4687); Σ gold: PIQA 928 labels "1", BoolQ 2033 True,
     * WinoGrande 639 labels "2", HellaSwag 0·2515 + 1·2485 + 2·2584 + 3·2458 = 15027 */
    struct { const char *task; int docs; long requests; long gold_sum; } want[] = {
        {"piqa", 1838, 3676, 928},       {"arc_easy", 2376, 9501, -1},
        {"arc_challenge", 1172, 4687, -1}, {"boolq", 3270, 6540, 2033},
        {"hellaswag", 10042, 40168, 15027}, {"winogrande", 1267, 2534, 639},
        {"lambada_openai", 5153, 5153, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ad_zs_set *s = load_ok(want[i].task, root, 0);
        cr_expect_eq(s->n_docs, want[i].docs, "%s docs", want[i].task);
        cr_expect_eq(s->n_requests, want[i].requests, "%s requests", want[i].task);
        long g = 0;
        for (int d = 0; d < s->n_docs; d++) g += s->docs[d].gold;
        if (want[i].gold_sum >= 0) cr_expect_eq(g, want[i].gold_sum, "%s gold labels", want[i].task);
        ad_zs_set_free(s);
    }
    /* the first BoolQ record (title "Ethanol fuel", passage "All biomass goes through ...") as
     * SuperGLUE's validation[0] passage reads: "Ethanol fuel -- All biomass goes through ..." */
    ad_zs_set *b = load_ok("boolq", root, 1);
    cr_expect(!strncmp(b->docs[0].req[0].context, "Ethanol fuel -- All biomass goes through at least some of these steps",
                       strlen("Ethanol fuel -- All biomass goes through at least some of these steps")),
              "%.80s", b->docs[0].req[0].context);
    cr_expect(strstr(b->docs[0].req[0].context, "\nQuestion: does ethanol take more energy make that produces?\nAnswer:") != NULL);
    ad_zs_set_free(b);
    /* MANIFEST.md: the first HellaSwag task is "Roof shingle removal: A man is sitting on a roof. he" */
    ad_zs_set *s = load_ok("hellaswag", root, 1);
    cr_expect_str_eq(s->docs[0].req[0].context, "Roof shingle removal: A man is sitting on a roof. he");
    ad_zs_set_free(s);
}

/* ---- --limit and errors -------------------------------------------------------------------------- */
Test(zeroshot_data, limit_keeps_first_documents) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/boolq/dev.jsonl",
               "{\"question\": \"q1\", \"answer\": true, \"passage\": \"p1\"}\n"
               "{\"question\": \"q2\", \"answer\": false, \"passage\": \"p2\"}\n"
               "{\"question\": \"q3\", \"answer\": true, \"passage\": \"p3\"}\n");
    ad_zs_set *s = load_ok("boolq", root, 2);
    cr_expect_eq(s->n_docs, 2);
    cr_expect_eq(s->n_total, 3);
    cr_expect_eq(s->n_requests, 4);
    expect_req(s, 1, 0, "p2\nQuestion: q2?\nAnswer:", " no");
    ad_zs_set_free(s);
    s = load_ok("boolq", root, 50);    /* more than the file holds: all */
    cr_expect_eq(s->n_docs, 3);
    ad_zs_set_free(s);
    rm_rf(root);
}

static void expect_load_error(const char *task, const char *root, const char *needle1, const char *needle2) {
    char err[AX_ERR_LEN] = "";
    ad_zs_set *s = NULL;
    int rc = ad_zs_load(ad_zs_task_find(task), root, 0, &s, err);
    cr_expect_neq(rc, 0, "%s: expected an error", task);
    cr_expect_null(s);
    cr_expect(strstr(err, needle1) != NULL, "error '%s' should contain '%s'", err, needle1);
    if (needle2) cr_expect(strstr(err, needle2) != NULL, "error '%s' should contain '%s'", err, needle2);
}

Test(zeroshot_data, missing_and_malformed_files_are_named) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    expect_load_error("piqa", root, "data/piqa/valid.jsonl", "yonatanbisk.com");
    write_file(root, "data/piqa/valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    expect_load_error("piqa", root, "valid-labels.lst", "not found");
    write_file(root, "data/piqa/valid-labels.lst", "0\n1\n");
    expect_load_error("piqa", root, "2 labels", "1 records");
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \"a\", \n");
    expect_load_error("piqa", root, "valid.jsonl:2", "malformed JSON");
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"} x\n");
    expect_load_error("piqa", root, "valid.jsonl:2", "malformed JSON");
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol2\": \"b\"}\n");
    expect_load_error("piqa", root, "valid.jsonl:2", "'sol1'");
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    write_file(root, "data/piqa/valid-labels.lst", "0\n7\n");
    expect_load_error("piqa", root, "valid-labels.lst", "not 0 or 1");
    write_file(root, "data/hellaswag/hellaswag_val_full.txt", "ctx\n1\na\nb\nc\nd\nctx2\n2\na\n");
    expect_load_error("hellaswag", root, "hellaswag_val_full.txt:7", "truncated");
    write_file(root, "data/hellaswag/hellaswag_val_full.txt", "ctx\n9\na\nb\nc\nd\n");
    expect_load_error("hellaswag", root, "hellaswag_val_full.txt:2", "0..3");
    write_file(root, "data/arc_easy/ARC-Easy-Test.jsonl",
               "{\"question\":{\"stem\":\"s\",\"choices\":[{\"text\":\"a\",\"label\":\"A\"}]},\"answerKey\":\"E\"}\n");
    expect_load_error("arc_easy", root, "ARC-Easy-Test.jsonl:1", "answerKey 'E'");
    write_file(root, "data/winogrande/dev.jsonl", "{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\"}\n");
    write_file(root, "data/winogrande/dev-labels.lst", "1\n");
    expect_load_error("winogrande", root, "dev.jsonl:1", "'_'");
    write_file(root, "data/boolq/dev.jsonl", "{\"question\": \"q\", \"passage\": \"p\", \"answer\": \"yes\"}\n");
    expect_load_error("boolq", root, "dev.jsonl:1", "'answer'");
    write_file(root, "data/lambada_openai/lambada_test.jsonl", "");
    expect_load_error("lambada_openai", root, "lambada_test.jsonl", "no records");
    rm_rf(root);
}

/* Regression: an empty labels file used to crash (NULL labels read as record 1's label). */
Test(zeroshot_data, empty_labels_file_is_an_error_naming_it) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/piqa/valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    write_file(root, "data/piqa/valid-labels.lst", "");
    expect_load_error("piqa", root, "valid-labels.lst", "no labels");
    write_file(root, "data/piqa/valid-labels.lst", "\n  \n");   /* blank lines only */
    expect_load_error("piqa", root, "valid-labels.lst", "no labels");
    write_file(root, "data/winogrande/dev.jsonl",
               "{\"sentence\": \"a _ b\", \"option1\": \"x\", \"option2\": \"y\"}\n");
    write_file(root, "data/winogrande/dev-labels.lst", "");
    expect_load_error("winogrande", root, "dev-labels.lst", "no labels");
    write_file(root, "data/winogrande/dev-labels.lst", "1e3\n");
    expect_load_error("winogrande", root, "dev-labels.lst:1", "label");
    rm_rf(root);
}

/* Hostile JSON lines: NUL bytes, invalid UTF-8, duplicate keys, \u0000, wrong types. Each error
 * names file:line and, for a type error, the key and the expected type. */
Test(zeroshot_data, hostile_json_lines_are_rejected_with_file_line_and_key) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/piqa/valid-labels.lst", "0\n1\n");
    /* a NUL byte inside line 2 (it used to cut the line short: the record parsed as a shorter one) */
    const char nul[] = "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n"
                       "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\0 junk\n";
    write_bytes(root, "data/piqa/valid.jsonl", nul, sizeof nul - 1);
    expect_load_error("piqa", root, "valid.jsonl:2", "NUL byte");
    /* invalid UTF-8 (a lone 0xff) in line 2 */
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\xff\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    expect_load_error("piqa", root, "valid.jsonl:2", "invalid UTF-8");
    /* duplicate key (Python's json keeps the last one silently: rejected) */
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"goal\": \"h\"}\n{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    expect_load_error("piqa", root, "valid.jsonl:1", "duplicate key \"goal\"");
    /* \u0000 escape (would truncate the C string) */
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\\u0000x\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    expect_load_error("piqa", root, "valid.jsonl:2", "\\u0000");
    /* a JSON value that is not an object */
    write_file(root, "data/piqa/valid.jsonl", "[1, 2]\n{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    expect_load_error("piqa", root, "valid.jsonl:1", "expected an object, got an array");
    /* wrong types: key, expected and found type */
    write_file(root, "data/piqa/valid.jsonl",
               "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": 7, \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    expect_load_error("piqa", root, "valid.jsonl:2: key 'goal' must be a string, got a number", NULL);
    write_file(root, "data/boolq/dev.jsonl",
               "{\"question\": \"q\", \"title\": 3, \"passage\": \"p\", \"answer\": true}\n");
    expect_load_error("boolq", root, "dev.jsonl:1: key 'title' must be a string, got a number", NULL);
    write_file(root, "data/boolq/dev.jsonl", "{\"question\": \"q\", \"passage\": \"p\", \"label\": 2}\n");
    expect_load_error("boolq", root, "dev.jsonl:1: key 'label'", "[0, 1]");
    write_file(root, "data/boolq/dev.jsonl", "{\"question\": \"q\", \"passage\": \"p\"}\n");
    expect_load_error("boolq", root, "dev.jsonl:1: key 'answer' missing", "true/false");
    write_file(root, "data/lambada_openai/lambada_test.jsonl", "{\"text\": null}\n");
    expect_load_error("lambada_openai", root, "lambada_test.jsonl:1: key 'text' must be a string, got null", NULL);
    write_file(root, "data/arc_easy/ARC-Easy-Test.jsonl", "{\"question\": 5, \"answerKey\": \"A\"}\n");
    expect_load_error("arc_easy", root, "ARC-Easy-Test.jsonl:1: key 'question' must be", "got a number");
    write_file(root, "data/arc_easy/ARC-Easy-Test.jsonl",
               "{\"question\":{\"stem\":\"s\",\"choices\":[{\"text\":\"a\",\"label\":1}]},\"answerKey\":\"A\"}\n");
    expect_load_error("arc_easy", root, "key 'question.choices[0].label' must be a string, got a number", NULL);
    write_file(root, "data/hellaswag/hellaswag_val.jsonl",
               "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": [\"w\", \"x\", \"y\", \"z\"], \"label\": 1.5}\n");
    expect_load_error("hellaswag", root, "hellaswag_val.jsonl:1: key 'label'", "integer");
    write_file(root, "data/hellaswag/hellaswag_val.jsonl",
               "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": [\"w\", 2, \"y\", \"z\"], \"label\": 1}\n");
    expect_load_error("hellaswag", root, "hellaswag_val.jsonl:1: key 'endings[1]' must be a string, got a number", NULL);
    write_file(root, "data/hellaswag/hellaswag_val.jsonl",
               "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": \"wxyz\", \"label\": 1}\n");
    expect_load_error("hellaswag", root, "key 'endings' must be an array of strings, got a string", NULL);
    rm_rf(root);
    /* the llama.cpp hellaswag text and a labels file: NUL bytes named by file:line */
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    const char hs[] = "ctx\n1\na\nb\0c\nc\nd\n";
    write_bytes(root, "data/hellaswag/hellaswag_val_full.txt", hs, sizeof hs - 1);
    expect_load_error("hellaswag", root, "hellaswag_val_full.txt:4", "NUL byte");
    write_file(root, "data/piqa/valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    write_bytes(root, "data/piqa/valid-labels.lst", "0\0\n", 3);
    expect_load_error("piqa", root, "valid-labels.lst:1", "NUL byte");
    rm_rf(root);
}

/* Python's (Unicode) strip and capitalize inside the prompts. Expectations from Python:
 *   python3 -c "print(repr(' \u3000was fine.\xa0'.strip()), repr('\xe9lan'.capitalize()))"
 *   -> 'was fine.' '\xc9lan' */
Test(zeroshot_requests, unicode_whitespace_and_capitalize_as_python) {
    char root[64];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/winogrande/dev.jsonl",
               "{\"sentence\": \"The bed was ruined but the _ \\u3000was fine.\\u00a0\", \"option1\": \"blanket\", "
               "\"option2\": \"bed\"}\n");
    write_file(root, "data/winogrande/dev-labels.lst", "1\n");
    ad_zs_set *s = load_ok("winogrande", root, 0);
    expect_req(s, 0, 0, "The bed was ruined but the blanket", " was fine.");
    ad_zs_set_free(s);
    /* hellaswag: ctx_b.capitalize() of "\u00e9lan VITAL" is "\u00c9lan vital"; endings stripped of
     * U+3000 / U+00A0 / U+2028 (preprocess: text.strip()) */
    write_file(root, "data/hellaswag/hellaswag_val.jsonl",
               "{\"activity_label\": \"Dance\", \"ctx_a\": \"She bows.\", \"ctx_b\": \"\\u00e9lan VITAL\", "
               "\"endings\": [\"\\u3000spins.\\u00a0\", \"\\u2028jumps.\", \"sits.\", \"\\u00dfleeps.\"], \"label\": 0}\n");
    s = load_ok("hellaswag", root, 0);
    expect_req(s, 0, 0, "Dance: She bows. \xc3\x89lan vital", " spins.");
    expect_req(s, 0, 1, "Dance: She bows. \xc3\x89lan vital", " jumps.");
    expect_req(s, 0, 3, "Dance: She bows. \xc3\x89lan vital", " \xc3\x9fleeps.");
    cr_expect_eq(s->docs[0].choice_len[3], 7.0);   /* len('\u00dfleeps.') == 7 */
    ad_zs_set_free(s);
    rm_rf(root);
}

Test(zeroshot_data, preprocess_helpers) {
    char *s = ad_hellaswag_preprocess("  a [title] b [x]c [unclosed d  e  ");
    /* strip -> "a [title] b [x]c [unclosed d  e"; " [title]" -> ". " -> "a.  b [x]c [unclosed d  e";
     * "[x]" removed, "[unclosed..." has no ']' and stays; "  " -> " " */
    cr_expect_str_eq(s, "a. b c [unclosed d e");
    free(s);
    s = ad_py_capitalize("hELLO wORLD");
    cr_expect_str_eq(s, "Hello world");
    free(s);
    cr_expect_eq(ad_utf8_len("na\xc3\xafve \xe2\x82\xac"), 7);   /* "naïve €" */
}

/* ---- scoring on hand-made logits ---------------------------------------------------------------- */
Test(zeroshot_scoring, loglikelihood_and_greedy) {
    /* row 0: logits (ln 3, 0, 0, 0): softmax = (3, 1, 1, 1)/6 -> log p(0) = ln 0.5, argmax 0
     * row 1: all equal: log p = ln 1/4; argmax = 0 (first maximum) */
    float rows[8] = {logf(3.0f), 0, 0, 0, 0, 0, 0, 0};
    char err[AX_ERR_LEN];
    double ll;
    int greedy;
    int cont_a[2] = {0, 0};
    cr_assert_eq(ae_zs_score_rows(rows, 2, 4, cont_a, &ll, &greedy, err), 0, "%s", err);
    cr_expect_float_eq(ll, log(0.5) + log(0.25), 1e-6);
    cr_expect_eq(greedy, 1);
    int cont_b[2] = {1, 3};   /* log(1/6) + log(1/4); token 1 is not the argmax of row 0 */
    cr_assert_eq(ae_zs_score_rows(rows, 2, 4, cont_b, &ll, &greedy, err), 0, "%s", err);
    cr_expect_float_eq(ll, log(1.0 / 6.0) + log(0.25), 1e-6);
    cr_expect_eq(greedy, 0);
    int cont_c[1] = {4};
    cr_expect_neq(ae_zs_score_rows(rows, 1, 4, cont_c, &ll, &greedy, err), 0);
    cr_expect(strstr(err, "vocabulary") != NULL, "%s", err);
    rows[2] = NAN;
    cr_expect_neq(ae_zs_score_rows(rows, 1, 4, cont_a, &ll, &greedy, err), 0);
}

Test(zeroshot_scoring, acc_and_acc_norm_decisions) {
    /* lls -4 (choice of 2 chars) vs -3 (1 char): acc picks 1 (-3 > -4); per character -2 vs -3:
     * acc_norm picks 0 */
    double lls[2] = {-4.0, -3.0}, len[2] = {2.0, 1.0};
    int p, q;
    ae_zs_decide(lls, len, 2, &p, &q);
    cr_expect_eq(p, 1);
    cr_expect_eq(q, 0);
    double tie[3] = {-2.0, -1.0, -1.0}, len3[3] = {1.0, 1.0, 1.0};
    ae_zs_decide(tie, len3, 3, &p, &q);   /* np.argmax: first maximum */
    cr_expect_eq(p, 1);
    cr_expect_eq(q, 1);
}

Test(zeroshot_scoring, mean_stderr_is_sample_std_over_sqrt_n) {
    /* x = 1,0,1,1: mean 0.75; Σ(x-m)² = 3·0.0625 + 0.5625 = 0.75; sample var 0.25; sd 0.5;
     * stderr 0.5 / sqrt(4) = 0.25 */
    double x[4] = {1, 0, 1, 1}, m, se;
    ae_zs_mean_stderr(x, 4, &m, &se);
    cr_expect_float_eq(m, 0.75, 1e-12);
    cr_expect_float_eq(se, 0.25, 1e-12);
    ae_zs_mean_stderr(x, 1, &m, &se);
    cr_expect(isnan(se));
}

/* ---- the request loop against a naive reference on a fake LM ----------------------------------- */
/* Fake LM behind the packed log-likelihood interface: the logits at position t of a sequence are a
 * pseudo-random function of that sequence's tokens[0..t] (a hash of the whole visible prefix), so
 * any mistake in which tokens sit at which positions, or in the packing offsets, changes them. It
 * records how the requests were packed. */
#define FV 7
typedef struct {
    int  budget_seqs, budget_tokens;   /* what the loop was told                               */
    long calls, seqs, over_budget;     /* calls made, sequences seen, calls exceeding the budget */
} fake_lm;

static void fake_row(const int *toks, int n, float *row) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) h = (h ^ (uint64_t)(toks[i] + 1)) * 1099511628211ULL;
    uint64_t st = h;
    for (int v = 0; v < FV; v++) row[v] = (float)(4.0 * tu_rand_unit(&st) - 2.0);
}

static int fake_loglik(void *ctx, const int *tokens, const int *offsets, int n_seqs, const int *targets,
                       double *logp, int *greedy, char *err) {
    fake_lm *f = ctx;
    f->calls++;
    f->seqs += n_seqs;
    /* the budget: at most budget_seqs sequences, at most budget_tokens tokens unless alone */
    if (n_seqs > f->budget_seqs || (n_seqs > 1 && offsets[n_seqs] > f->budget_tokens)) f->over_budget++;
    for (int i = 0; i < n_seqs; i++)
        for (int j = offsets[i]; j < offsets[i + 1]; j++) {
            if (targets[j] < 0) continue;
            float row[FV];
            fake_row(tokens + offsets[i], j - offsets[i] + 1, row);   /* the sequence's own prefix */
            if (ae_zs_score_rows(row, 1, FV, &targets[j], &logp[j], &greedy[j], err)) return -1;
        }
    return 0;
}

/* naive lm-eval: inp = (ctx + cont)[-(max_len+1):][:-1]; rows of the last len(cont) positions */
static double naive_ll(const ae_zs_ids *q, int max_len, int *greedy) {
    int all[300], n = 0;
    for (int i = 0; i < q->n_ctx; i++) all[n++] = q->ctx[i];
    for (int i = 0; i < q->n_cont; i++) all[n++] = q->cont[i];
    int start = n - 1 > max_len ? n - 1 - max_len : 0, L = n - 1 - start;
    float rows[64 * FV];
    for (int j = 0; j < q->n_cont; j++) {
        int p = L - q->n_cont + j;           /* position predicting cont[j] */
        fake_row(all + start, p + 1, rows + j * FV);
    }
    double ll;
    char err[AX_ERR_LEN];
    cr_assert_eq(ae_zs_score_rows(rows, q->n_cont, FV, q->cont, &ll, greedy, err), 0, "%s", err);
    return ll;
}

/* Random documents of `kind`; the loop's scores and metrics against the naive reference, under a
 * packing budget of budget_seqs sequences / budget_tokens tokens per call. per_out (may be NULL)
 * receives the per-request scores (caller frees). */
static void run_loop_case_budget(ad_zs_kind kind, unsigned metrics, int max_len, int budget_seqs,
                                 int budget_tokens, ae_zs_req_score **per_out, long *n_req_out) {
    ad_zs_task task = {"fake", kind, metrics, "x", NULL, NULL, NULL, "test", "test"};
    ad_zs_set set;
    memset(&set, 0, sizeof set);
    set.task = &task;
    uint64_t st = 42 + (uint64_t)max_len;
    const int ndoc = 12;
    char err[AX_ERR_LEN];
    /* documents with 1..4 choices; contexts shared (multiple choice) or sharing a prefix
     * (multiple input), continuations of 1..5 tokens */
    for (int d = 0; d < ndoc; d++) {
        int nch = kind == AD_ZS_LOGLIKELIHOOD ? 1 : 1 + (int)(tu_rand_unit(&st) * 4);
        const char *ch[4] = {"a", "bb", "ccc", "dddd"};
        cr_assert_eq(ad_zs_add_mc(&set, "ctx", ch, nch, (int)(tu_rand_unit(&st) * nch), err), 0);
    }
    ae_zs_encoded e;
    memset(&e, 0, sizeof e);
    e.set = &set;
    e.req = calloc((size_t)set.n_requests, sizeof *e.req);
    e.first = calloc((size_t)ndoc + 1, sizeof *e.first);
    long r = 0;
    for (int d = 0; d < ndoc; d++) {
        e.first[d] = (int)r;
        int base_ctx[40], nbase = 3 + (int)(tu_rand_unit(&st) * 20);
        for (int i = 0; i < nbase; i++) base_ctx[i] = (int)(tu_rand_unit(&st) * FV);
        for (int j = 0; j < set.docs[d].n_req; j++, r++) {
            ae_zs_ids *q = &e.req[r];
            int extra = kind == AD_ZS_MULTIPLE_INPUT ? 1 + j : 0;   /* differing context tails */
            q->n_ctx = nbase + extra;
            q->ctx = malloc((size_t)q->n_ctx * sizeof(int));
            memcpy(q->ctx, base_ctx, (size_t)nbase * sizeof(int));
            for (int i = 0; i < extra; i++) q->ctx[nbase + i] = (j + i) % FV;
            q->n_cont = 1 + (int)(tu_rand_unit(&st) * 5);
            q->cont = malloc((size_t)q->n_cont * sizeof(int));
            for (int i = 0; i < q->n_cont; i++) q->cont[i] = (int)(tu_rand_unit(&st) * FV);
        }
    }
    e.first[ndoc] = (int)r;
    fake_lm f;
    memset(&f, 0, sizeof f);
    f.budget_seqs = budget_seqs;
    f.budget_tokens = budget_tokens;
    ae_zs_lm lm = {&f, FV, max_len, budget_tokens, budget_seqs, fake_loglik, NULL};
    ae_zs_result res;
    ae_zs_req_score *per = calloc((size_t)set.n_requests, sizeof *per);
    cr_assert_eq(ae_zs_eval_encoded(&lm, &e, &res, per, NULL, NULL, 0, err), 0, "%s", err);
    /* naive reference: every request from scratch */
    double acc = 0, accn = 0, llsum = 0;
    long scored_req = 0;
    int scored = 0, skipped = 0;
    for (int d = 0; d < ndoc; d++) {
        double lls[4];
        int g[4], too_long = 0;
        for (int j = 0; j < set.docs[d].n_req; j++) too_long |= e.req[e.first[d] + j].n_cont > max_len;
        if (too_long) {   /* cannot be scored in the window: left out */
            skipped++;
            for (int j = 0; j < set.docs[d].n_req; j++) cr_expect_eq(per[e.first[d] + j].scored, 0);
            continue;
        }
        scored++;
        for (int j = 0; j < set.docs[d].n_req; j++) {
            const ae_zs_ids *q = &e.req[e.first[d] + j];
            lls[j] = naive_ll(q, max_len, &g[j]);
            scored_req++;
            /* the per-request scores (--log-samples) are the naive ones */
            const ae_zs_req_score *ps = &per[e.first[d] + j];
            cr_expect_eq(ps->scored, 1);
            cr_expect_float_eq(ps->ll, lls[j], 1e-9, "doc %d choice %d", d, j);
            cr_expect_eq(ps->greedy, g[j]);
        }
        int p, pn;
        ae_zs_decide(lls, set.docs[d].choice_len, set.docs[d].n_req, &p, &pn);
        if (kind == AD_ZS_LOGLIKELIHOOD) acc += g[0];
        else { acc += p == set.docs[d].gold; accn += pn == set.docs[d].gold; }
        llsum += lls[set.docs[d].gold];
    }
    cr_assert_gt(scored, 0);
    if (max_len < 5) cr_expect_gt(skipped, 0, "the case should exercise skipping");
    cr_expect_eq(res.n, scored);
    cr_expect_eq(res.skipped, skipped);
    cr_expect_eq(res.requests, set.n_requests);
    cr_expect_float_eq(res.acc, acc / scored, 1e-12);
    if (metrics & AD_ZS_ACC_NORM) cr_expect_float_eq(res.acc_norm, accn / scored, 1e-12);
    else cr_expect(isnan(res.acc_norm));
    cr_expect_float_eq(res.mean_ll, llsum / scored, 1e-9);
    if (metrics & AD_ZS_PPL) cr_expect_float_eq(res.ppl, exp(-llsum / scored), 1e-9 * res.ppl);
    /* every scored request went through the LM exactly once, and no call exceeded the budget;
     * a budget of one sequence makes one call per request */
    cr_expect_eq(f.seqs, scored_req);
    cr_expect_eq(f.over_budget, 0, "%ld calls over the budget %d seqs / %d tokens", f.over_budget,
                 budget_seqs, budget_tokens);
    if (budget_seqs == 1) cr_expect_eq(f.calls, scored_req);
    else cr_expect_lt(f.calls, scored_req, "requests are packed: %ld calls for %ld requests", f.calls, scored_req);
    if (per_out) { *per_out = per; *n_req_out = set.n_requests; }
    else free(per);
    for (long i = 0; i < set.n_requests; i++) { free(e.req[i].ctx); free(e.req[i].cont); }
    free(e.req);
    free(e.first);
    for (int d = 0; d < set.n_docs; d++) {
        for (int j = 0; j < set.docs[d].n_req; j++) {
            free(set.docs[d].req[j].context);
            free(set.docs[d].req[j].continuation);
        }
        free(set.docs[d].req);
        free(set.docs[d].choice_len);
    }
    free(set.docs);
}

static void run_loop_case(ad_zs_kind kind, unsigned metrics, int max_len) {
    run_loop_case_budget(kind, metrics, max_len, 5, 48, NULL, NULL);
}

Test(zeroshot_loop, shared_context_matches_naive_multiple_choice) {
    run_loop_case(AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC | AD_ZS_ACC_NORM, 200);
}
Test(zeroshot_loop, shared_prefix_matches_naive_multiple_input) {
    run_loop_case(AD_ZS_MULTIPLE_INPUT, AD_ZS_ACC, 200);
}
Test(zeroshot_loop, loglikelihood_greedy_and_perplexity) {
    run_loop_case(AD_ZS_LOGLIKELIHOOD, AD_ZS_ACC | AD_ZS_PPL, 200);
}
Test(zeroshot_loop, continuation_longer_than_window_is_left_out) {
    run_loop_case(AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC | AD_ZS_ACC_NORM, 4);   /* continuations 1..5 */
}
Test(zeroshot_loop, left_truncation_to_max_length) {
    run_loop_case(AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC | AD_ZS_ACC_NORM, 8);   /* contexts up to 26 */
}

/* The packing budget changes how requests are grouped into calls, never a score: one sequence per
 * call, small packs and one big pack give the same per-request ll and greedy flags, bit for bit
 * (the fake LM is a pure function of each sequence), and each matches the naive reference. */
Test(zeroshot_loop, packing_budget_does_not_change_scores) {
    const int budgets[3][2] = {{1, 1}, {3, 30}, {100000, 1 << 20}};
    ae_zs_req_score *per[3];
    long n[3];
    for (int b = 0; b < 3; b++)
        run_loop_case_budget(AD_ZS_MULTIPLE_INPUT, AD_ZS_ACC, 200, budgets[b][0], budgets[b][1], &per[b], &n[b]);
    for (int b = 1; b < 3; b++) {
        cr_assert_eq(n[b], n[0]);
        for (long r = 0; r < n[0]; r++) {
            cr_expect_eq(per[b][r].scored, per[0][r].scored);
            cr_expect(per[b][r].ll == per[0][r].ll, "request %ld: %.17g vs %.17g", r, per[b][r].ll, per[0][r].ll);
            cr_expect_eq(per[b][r].greedy, per[0][r].greedy);
        }
    }
    for (int b = 0; b < 3; b++) free(per[b]);
}

/* ---- _encode_pair on the LLaMA-2 tokenizer ------------------------------------------------------ */
static int data_root_or_skip(char *root, size_t len) {
    char err[AX_ERR_LEN];
    if (ax_data_root(root, len, err)) return -1;
    return 0;
}

Test(zeroshot_encode, encode_pair_split_and_trailing_space) {
    char root[AX_PATH_LEN], path[AX_PATH_LEN + 64], err[AX_ERR_LEN];
    if (data_root_or_skip(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(path, sizeof path, "%s/models/llama2-tokenizer/tokenizer.json", root);
    ae_tokenizer *tok;
    cr_assert_eq(ae_tokenizer_load(path, &tok, err), 0, "%s", err);
    ae_zs_ids a, b, c;
    cr_assert_eq(ae_zs_encode_pair(tok, "Question: Is it?\nAnswer:", " yes", 0, &a, err), 0, "%s", err);
    /* expected pieces looked up in tokenizer.json's vocab: "Answer" 22550 (no "▁": it follows the
     * newline), ":" 29901, "▁yes" 4874 */
    cr_assert_eq(a.n_cont, 1);
    cr_expect_eq(a.cont[0], 4874);
    cr_assert_geq(a.n_ctx, 2);
    cr_expect_eq(a.ctx[a.n_ctx - 2], 22550);
    cr_expect_eq(a.ctx[a.n_ctx - 1], 29901);
    cr_expect_neq(a.ctx[0], 1, "no BOS by default");
    /* the trailing space of the context moves to the continuation: same ids */
    cr_assert_eq(ae_zs_encode_pair(tok, "Question: Is it?\nAnswer: ", "yes", 0, &b, err), 0, "%s", err);
    cr_expect_eq(b.n_ctx, a.n_ctx);
    cr_expect_eq(b.n_cont, 1);
    cr_expect_eq(b.cont[0], 4874);
    cr_expect_eq(memcmp(a.ctx, b.ctx, (size_t)a.n_ctx * sizeof(int)), 0);
    /* with BOS (add_bos_token=True): BOS first, the same split */
    cr_assert_eq(ae_zs_encode_pair(tok, "Question: Is it?\nAnswer:", " yes", 1, &c, err), 0, "%s", err);
    cr_expect_eq(c.ctx[0], 1);
    cr_expect_eq(c.n_ctx, a.n_ctx + 1);
    cr_expect_eq(c.cont[0], 4874);
    free(a.ctx); free(a.cont); free(b.ctx); free(b.cont); free(c.ctx); free(c.cont);
    /* winogrande partial continuation: "▁always" 2337 "▁got" 2355 "▁the" 278 "▁easier" 6775
     * "▁cases" 4251 "." 29889 (vocab lookups) */
    cr_assert_eq(ae_zs_encode_pair(tok, "Sarah was a much better surgeon than Maria so Maria",
                                   " always got the easier cases.", 0, &a, err), 0, "%s", err);
    int want[6] = {2337, 2355, 278, 6775, 4251, 29889};
    cr_assert_eq(a.n_cont, 6);
    for (int i = 0; i < 6; i++) cr_expect_eq(a.cont[i], want[i], "token %d", i);
    cr_expect_eq(a.ctx[a.n_ctx - 1], 6217);   /* "▁Maria" */
    free(a.ctx); free(a.cont);
    /* an empty context becomes [BOS] (prefix_token_id) */
    cr_assert_eq(ae_zs_encode_pair(tok, "", " alone", 0, &a, err), 0, "%s", err);
    cr_expect_eq(a.n_ctx, 1);
    cr_expect_eq(a.ctx[0], 1);
    free(a.ctx); free(a.cont);
    ae_tokenizer_free(tok);
}

/* _encode_pair moves the context's trailing whitespace as Python's str.rstrip() finds it, Unicode
 * included: (ctx + ws, cont) must encode exactly as (ctx, ws + cont) (lm-eval model.py:
 * n_spaces = len(context) - len(context.rstrip())). U+00A0, U+3000, U+2028 are whitespace to Python. */
Test(zeroshot_encode, encode_pair_moves_unicode_trailing_whitespace) {
    char root[AX_PATH_LEN], path[AX_PATH_LEN + 64], err[AX_ERR_LEN];
    if (data_root_or_skip(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(path, sizeof path, "%s/models/llama2-tokenizer/tokenizer.json", root);
    ae_tokenizer *tok;
    cr_assert_eq(ae_tokenizer_load(path, &tok, err), 0, "%s", err);
    const char *ws[3] = {"\xc2\xa0", "\xe3\x80\x80 ", "\xe2\x80\xa8"};
    for (int k = 0; k < 3; k++) {
        char ctx_ws[128], cont_ws[128];
        snprintf(ctx_ws, sizeof ctx_ws, "Question: Is it?\nAnswer:%s", ws[k]);
        snprintf(cont_ws, sizeof cont_ws, "%syes", ws[k]);
        ae_zs_ids a, b;
        cr_assert_eq(ae_zs_encode_pair(tok, ctx_ws, "yes", 0, &a, err), 0, "%s", err);
        cr_assert_eq(ae_zs_encode_pair(tok, "Question: Is it?\nAnswer:", cont_ws, 0, &b, err), 0, "%s", err);
        cr_expect_eq(a.n_ctx, b.n_ctx, "whitespace %d: context lengths", k);
        cr_expect_eq(a.n_cont, b.n_cont, "whitespace %d: continuation lengths", k);
        if (a.n_ctx == b.n_ctx) cr_expect_eq(memcmp(a.ctx, b.ctx, (size_t)a.n_ctx * sizeof(int)), 0);
        if (a.n_cont == b.n_cont) cr_expect_eq(memcmp(a.cont, b.cont, (size_t)a.n_cont * sizeof(int)), 0);
        cr_expect_eq(a.ctx[a.n_ctx - 1], 29901, "the context ends in ':' (29901), whitespace %d", k);
        free(a.ctx); free(a.cont); free(b.ctx); free(b.cont);
    }
    ae_tokenizer_free(tok);
}

/* ---- end to end on stories260K ------------------------------------------------------------------ */
Test(zeroshot_e2e, two_tasks_on_stories260k) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], err[AX_ERR_LEN];
    if (data_root_or_skip(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    const char *tasks[2] = {"piqa", "winogrande"};
    const char *modes[2] = {"fp16", "w4a4-g32"};
    ae_zs_opts o;
    memset(&o, 0, sizeof o);
    o.model_dir = model;
    o.tasks = tasks; o.n_tasks = 2;
    o.modes = modes; o.n_modes = 2;
    o.limit = 6;
    o.nthreads = 2;
    cJSON *doc = NULL;
    cr_assert_eq(ae_zs_run(&o, &doc, err), 0, "%s", err);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(doc, "modes");
    cr_assert_eq(cJSON_GetArraySize(res), 2);
    for (int mi = 0; mi < 2; mi++) {
        const cJSON *r = cJSON_GetArrayItem(res, mi);
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(r, "tasks");
        const cJSON *pq = cJSON_GetObjectItemCaseSensitive(ts, "piqa");
        const cJSON *wg = cJSON_GetObjectItemCaseSensitive(ts, "winogrande");
        cr_assert(pq && wg);
        double a1 = cJSON_GetObjectItemCaseSensitive(pq, "acc_norm")->valuedouble;
        double a2 = cJSON_GetObjectItemCaseSensitive(wg, "acc")->valuedouble;
        cr_expect_eq(cJSON_GetObjectItemCaseSensitive(pq, "n")->valuedouble, 6.0);
        cr_expect_eq(cJSON_GetObjectItemCaseSensitive(pq, "requests")->valuedouble, 12.0);
        /* accuracies over 6 documents are multiples of 1/6 */
        cr_expect_float_eq(a1 * 6, round(a1 * 6), 1e-9);
        cr_expect_float_eq(a2 * 6, round(a2 * 6), 1e-9);
        /* the average is the mean of piqa acc_norm and winogrande acc */
        cr_expect_float_eq(cJSON_GetObjectItemCaseSensitive(r, "average")->valuedouble, (a1 + a2) / 2, 1e-12);
        /* log-likelihoods of real text under a real model are negative and finite */
        double ll = cJSON_GetObjectItemCaseSensitive(pq, "mean_ll_gold")->valuedouble;
        cr_expect(ll < 0 && ll > -1000, "mean ll %g", ll);
    }
    /* the gold ll of the first piqa document equals an independent forward of the full sequence
     * (no context sharing, one ae_forward from position 0) */
    o.n_tasks = 1; o.n_modes = 1; o.limit = 1;
    cJSON *doc1 = NULL;
    cr_assert_eq(ae_zs_run(&o, &doc1, err), 0, "%s", err);
    double ll_run = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc1, "modes"), 0), "tasks"), "piqa"), "mean_ll_gold")->valuedouble;
    ad_zs_set *set = load_ok("piqa", root, 1);
    char tokp[AX_PATH_LEN + 80];
    snprintf(tokp, sizeof tokp, "%s/tokenizer.json", model);
    ae_tokenizer *tok; ae_model *m; ae_runner *rn;
    cr_assert_eq(ae_tokenizer_load(tokp, &tok, err), 0, "%s", err);
    cr_assert_eq(ae_model_load(model, &m, err), 0, "%s", err);
    aq_mode fp;
    cr_assert_eq(aq_mode_parse("fp16", &fp, err), 0);
    ae_run_opts ro = {fp, AE_GEMM_FAKE, 0, 1, 512};
    cr_assert_eq(ae_runner_build(m, &ro, NULL, &rn, err), 0, "%s", err);
    const ad_zs_doc *d0 = &set->docs[0];
    ae_zs_ids q;
    cr_assert_eq(ae_zs_encode_pair(tok, d0->req[d0->gold].context, d0->req[d0->gold].continuation, 0, &q, err), 0);
    int seq[600], L = 0;
    for (int i = 0; i < q.n_ctx; i++) seq[L++] = q.ctx[i];
    for (int i = 0; i < q.n_cont - 1; i++) seq[L++] = q.cont[i];
    float *rows = malloc((size_t)q.n_cont * 512 * sizeof *rows);
    cr_assert_eq(ae_forward(rn, seq, L, 0, q.n_ctx - 1, rows, err), 0, "%s", err);
    double ll = 0;
    for (int j = 0; j < q.n_cont; j++) {   /* log-softmax by hand, in double */
        const float *x = rows + (size_t)j * 512;
        double mx = x[0], s = 0;
        for (int v = 1; v < 512; v++) if (x[v] > mx) mx = x[v];
        for (int v = 0; v < 512; v++) s += exp(x[v] - mx);
        ll += x[q.cont[j]] - mx - log(s);
    }
    cr_expect_float_eq(ll_run, ll, 1e-4, "run %g vs independent %g", ll_run, ll);
    free(rows); free(q.ctx); free(q.cont);
    ae_runner_free(rn); ae_model_free(m); ae_tokenizer_free(tok); ad_zs_set_free(set);
    cJSON_Delete(doc1);
    cJSON_Delete(doc);
}

/* ---- packing on the cpu engine ------------------------------------------------------------------ */
/* The same requests (piqa and arc_easy, a document's choices sharing their context; lambada) scored
 * through ae_engine_loglik_packed with one sequence per call and with everything in one pack give
 * the same ll up to fp32 rounding and the same greedy flags, in fp16 and w4a4-g32. Every group of
 * calls that starts at a document starts from an empty KV cache (ae_zs_eval_encoded_dist: what makes
 * the scores independent of the number of ranks), so with one sequence per call a document never
 * reuses the previous document's common prefix ("Question:"), while in one pack it does: those
 * prefix rows are recomputed by an sgemm of another row count, which moves ll by a few fp32 ulps of
 * the sum (seen: 2e-5 nats on -79, 2.7e-7 relative); the bound is 2e-6 relative. Within a document
 * the context is reused either way. The values are also real log-likelihoods (finite, negative). */
Test(zeroshot_engine, packing_does_not_change_scores_on_cpu, .timeout = 300) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tokp[AX_PATH_LEN + 128], err[AX_ERR_LEN];
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    snprintf(tokp, sizeof tokp, "%s/tokenizer.json", model);
    ae_tokenizer *tok;
    ae_model *m;
    cr_assert_eq(ae_tokenizer_load(tokp, &tok, err), 0, "%s", err);
    cr_assert_eq(ae_model_load(model, &m, err), 0, "%s", err);
    const char *tasks[3] = {"piqa", "arc_easy", "lambada_openai"};
    const char *modes[2] = {"fp16", "w4a4-g32"};
    for (int ti = 0; ti < 3; ti++) {
        ad_zs_set *set = load_ok(tasks[ti], root, 8);
        ae_zs_encoded *enc;
        cr_assert_eq(ae_zs_encode_set(tok, set, 0, &enc, err), 0, "%s", err);
        for (int mi = 0; mi < 2; mi++) {
            ae_zs_req_score *per[2];
            long budget_seqs[2];
            for (int b = 0; b < 2; b++) {
                ae_engine_opts eo;
                memset(&eo, 0, sizeof eo);
                eo.device = AE_DEV_CPU;
                cr_assert_eq(aq_mode_parse(modes[mi], &eo.mode, err), 0, "%s", err);
                eo.gemm = AE_GEMM_FAKE;
                eo.nthreads = 2;
                eo.max_seq = m->cfg.max_pos;
                ae_engine *e;
                cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
                /* b = 0: one sequence (and at most 1 token unless alone) per call; b = 1: one pack */
                ae_zs_lm lm = b == 0 ? ae_zs_lm_from_engine(e, m->cfg.max_pos, 1, 1)
                                     : ae_zs_lm_from_engine(e, m->cfg.max_pos, 1 << 24, 1 << 20);
                budget_seqs[b] = lm.batch_seqs;
                per[b] = calloc((size_t)set->n_requests, sizeof *per[b]);
                ae_zs_result res;
                cr_assert_eq(ae_zs_eval_encoded(&lm, enc, &res, per[b], NULL, NULL, 0, err), 0, "%s", err);
                ae_engine_free(e);
            }
            cr_expect_eq(budget_seqs[0], 1);
            cr_expect_gt(budget_seqs[1], set->n_requests);
            for (long r = 0; r < set->n_requests; r++) {
                cr_assert(per[0][r].scored && per[1][r].scored);
                cr_expect(isfinite(per[0][r].ll) && per[0][r].ll < 0, "ll %g", per[0][r].ll);
                cr_expect(fabs(per[0][r].ll - per[1][r].ll) <= 2e-6 * fabs(per[1][r].ll), "%s %s request %ld: %.12g vs %.12g",
                          tasks[ti], modes[mi], r, per[0][r].ll, per[1][r].ll);
                cr_expect_eq(per[0][r].greedy, per[1][r].greedy);
            }
            free(per[0]);
            free(per[1]);
        }
        ae_zs_encoded_free(enc);
        ad_zs_set_free(set);
    }
    ae_model_free(m);
    ae_tokenizer_free(tok);
}

/* ---- --log-samples ---------------------------------------------------------------------------- */
/* Each line of a JSON-lines file, parsed strictly; *n lines. */
static cJSON **read_lines(const char *path, int *n) {
    char *text, err[AX_ERR_LEN];
    size_t len;
    cr_assert_eq(ax_read_file(path, &text, &len, err), 0, "%s", err);
    cr_assert(len > 0 && text[len - 1] == '\n', "%s ends with a newline", path);
    int cap = 0;
    cJSON **v = NULL;
    *n = 0;
    for (char *p = text, *nl; p < text + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(text + len - p));
        cr_assert_not_null(nl);
        if (*n == cap) { cap = cap ? 2 * cap : 64; v = realloc(v, (size_t)cap * sizeof *v); }
        v[*n] = ax_json_parse_strict(p, (size_t)(nl - p), "sample line", err);
        cr_assert_not_null(v[*n], "line %d: %s", *n + 1, err);
        (*n)++;
    }
    free(text);
    return v;
}

static const cJSON *key(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int is_int(const cJSON *v) { return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble); }

static int no_tmp_left(const char *dir) {   /* the atomic writer leaves no "*.tmp.*" behind */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", dir);
    return system(cmd) != 0;
}

Test(zeroshot_e2e, log_samples_one_line_per_request_with_the_scored_ll, .timeout = 300) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], err[AX_ERR_LEN], tmp[64], logp[128];
    if (data_root_or_skip(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    snprintf(logp, sizeof logp, "%s/samples.jsonl", tmp);
    const char *tasks[2] = {"piqa", "lambada_openai"};
    const char *modes[2] = {"fp16", "w4a4-g32"};
    ae_zs_opts o;
    memset(&o, 0, sizeof o);
    o.model_dir = model;
    o.tasks = tasks; o.n_tasks = 2;
    o.modes = modes; o.n_modes = 2;
    o.limit = 3;
    o.nthreads = 2;
    o.log_samples = logp;
    cJSON *doc = NULL;
    cr_assert_eq(ae_zs_run(&o, &doc, err), 0, "%s", err);
    int n;
    cJSON **ln = read_lines(logp, &n);
    /* requests: piqa 3 documents x 2 choices + lambada 3 x 1 = 9 per mode, 2 modes */
    long per_mode = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, key(doc, "tasks")) per_mode += (long)key(t, "requests")->valuedouble;
    cr_expect_eq(per_mode, 9);
    cr_assert_eq(n, 2 * per_mode, "one line per request and mode: %d lines", n);
    cr_expect(no_tmp_left(tmp));
    /* the strings are those ad_zs_load builds, the ids an independent _encode_pair of them */
    ad_zs_set *sets[2] = {load_ok("piqa", root, 3), load_ok("lambada_openai", root, 3)};
    char tokp[AX_PATH_LEN + 80];
    snprintf(tokp, sizeof tokp, "%s/tokenizer.json", model);
    ae_tokenizer *tok;
    cr_assert_eq(ae_tokenizer_load(tokp, &tok, err), 0, "%s", err);
    int li = 0;
    for (int mi = 0; mi < 2; mi++) {
        const cJSON *mres = key(cJSON_GetArrayItem(key(doc, "modes"), mi), "tasks");
        for (int ti = 0; ti < 2; ti++) {
            const ad_zs_set *s = sets[ti];
            double acc = 0, accn = 0, gold_ll = 0;
            for (int d = 0; d < s->n_docs; d++) {
                double lls[8], best = -INFINITY, bestn = -INFINITY;
                int pred = 0, predn = 0, greedy0 = 0;
                for (int j = 0; j < s->docs[d].n_req; j++, li++) {
                    const cJSON *l = ln[li];
                    cr_assert(cJSON_IsString(key(l, "mode")) && cJSON_IsString(key(l, "task")));
                    cr_expect_str_eq(key(l, "mode")->valuestring, modes[mi]);
                    cr_expect_str_eq(key(l, "task")->valuestring, tasks[ti]);
                    cr_assert(is_int(key(l, "doc")) && is_int(key(l, "choice")) && is_int(key(l, "gold")));
                    cr_expect_eq(key(l, "doc")->valueint, d);
                    cr_expect_eq(key(l, "choice")->valueint, j);
                    cr_expect_eq(key(l, "gold")->valueint, s->docs[d].gold);
                    cr_assert(cJSON_IsString(key(l, "context")) && cJSON_IsString(key(l, "continuation")));
                    cr_expect_str_eq(key(l, "context")->valuestring, s->docs[d].req[j].context);
                    cr_expect_str_eq(key(l, "continuation")->valuestring, s->docs[d].req[j].continuation);
                    cr_assert(cJSON_IsNumber(key(l, "ll")), "ll is a number");
                    cr_assert(cJSON_IsBool(key(l, "greedy")) && cJSON_IsFalse(key(l, "skipped")));
                    cr_assert(is_int(key(l, "choice_len")));
                    const char *cont = key(l, "continuation")->valuestring;
                    if (s->task->kind == AD_ZS_MULTIPLE_CHOICE) {
                        /* choice = continuation without the target delimiter " "; its length in
                         * code points = bytes that are not UTF-8 continuation bytes */
                        int cp = 0;
                        for (const char *c = cont + 1; *c; c++) cp += ((unsigned char)*c & 0xC0) != 0x80;
                        cr_expect_eq(key(l, "choice_len")->valueint, cp, "%s", cont);
                    }
                    ae_zs_ids q;
                    cr_assert_eq(ae_zs_encode_pair(tok, key(l, "context")->valuestring, cont, 0, &q, err), 0, "%s", err);
                    const cJSON *ci = key(l, "ctx_ids"), *ki = key(l, "cont_ids");
                    cr_assert(cJSON_IsArray(ci) && cJSON_IsArray(ki));
                    cr_assert_eq(cJSON_GetArraySize(ci), q.n_ctx);
                    cr_assert_eq(cJSON_GetArraySize(ki), q.n_cont);
                    for (int i = 0; i < q.n_ctx; i++) cr_expect_eq(cJSON_GetArrayItem(ci, i)->valueint, q.ctx[i]);
                    for (int i = 0; i < q.n_cont; i++) cr_expect_eq(cJSON_GetArrayItem(ki, i)->valueint, q.cont[i]);
                    free(q.ctx); free(q.cont);
                    lls[j] = key(l, "ll")->valuedouble;
                    cr_expect(lls[j] < 0 && isfinite(lls[j]), "ll %g", lls[j]);
                    if (j == 0) greedy0 = cJSON_IsTrue(key(l, "greedy"));
                    /* np.argmax: first maximum; acc_norm divides by choice_len */
                    if (lls[j] > best) { best = lls[j]; pred = j; }
                    double nl = lls[j] / key(l, "choice_len")->valuedouble;
                    if (nl > bestn) { bestn = nl; predn = j; }
                }
                gold_ll += lls[s->docs[d].gold];
                if (s->task->kind == AD_ZS_LOGLIKELIHOOD) acc += greedy0;
                else { acc += pred == s->docs[d].gold; accn += predn == s->docs[d].gold; }
            }
            /* the logged values are the ones the metrics were computed from */
            const cJSON *r = key(mres, tasks[ti]);
            cr_expect_float_eq(key(r, "acc")->valuedouble, acc / s->n_docs, 1e-12, "%s %s acc", modes[mi], tasks[ti]);
            if (s->task->metrics & AD_ZS_ACC_NORM)
                cr_expect_float_eq(key(r, "acc_norm")->valuedouble, accn / s->n_docs, 1e-12);
            cr_expect_float_eq(key(r, "mean_ll_gold")->valuedouble, gold_ll / s->n_docs, 1e-12,
                               "%s %s mean gold ll", modes[mi], tasks[ti]);
        }
    }
    cr_expect(cJSON_IsString(key(doc, "log_samples")));
    for (int i = 0; i < n; i++) cJSON_Delete(ln[i]);
    free(ln);
    ae_tokenizer_free(tok);
    ad_zs_set_free(sets[0]); ad_zs_set_free(sets[1]);
    cJSON_Delete(doc);
    rm_rf(tmp);
}

/* ---- the CLI ------------------------------------------------------------------------------------ */
/* Run `[env] apex4 eval zeroshot args`, output (stdout + stderr) into out; the exit status. */
static int run_cli_env(const char *env, const char *args, char *out, size_t outlen) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) bin = "build/apex4";
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s eval zeroshot %s 2>&1", env, bin, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int run_cli(const char *args, char *out, size_t outlen) { return run_cli_env("", args, out, outlen); }

static void expect_no_sanitizer_report(const char *out) {
    cr_expect(strstr(out, "AddressSanitizer") == NULL && strstr(out, "runtime error") == NULL &&
              strstr(out, "Segmentation") == NULL, "crash report: %s", out);
}

/* Options are checked before any work: with --model /nonexistent the error is about the option, not
 * the model (which would be read first otherwise). */
Test(zeroshot_cli, bad_paths_and_numbers_fail_before_any_work) {
    char out[8192];
    cr_expect_eq(run_cli("--model /nonexistent --out ''", out, sizeof out), 2);
    cr_expect(strstr(out, "--out") && strstr(out, "empty"), "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --out /nonexistent-dir/x.json", out, sizeof out), 2);
    cr_expect(strstr(out, "--out '/nonexistent-dir/x.json'") && strstr(out, "does not exist"), "%s", out);
    cr_expect(strstr(out, "/nonexistent:") == NULL, "nothing was loaded: %s", out);
    cr_expect_eq(run_cli("--model /nonexistent --out /tmp", out, sizeof out), 2);
    cr_expect(strstr(out, "--out") && strstr(out, "directory"), "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --log-samples /nonexistent-dir/s.jsonl", out, sizeof out), 2);
    cr_expect(strstr(out, "--log-samples '/nonexistent-dir/s.jsonl'"), "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --log-samples ''", out, sizeof out), 2);
    cr_expect(strstr(out, "--log-samples") && strstr(out, "empty"), "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --out /tmp/apex4-zs-same.json --log-samples /tmp/apex4-zs-same.json",
                         out, sizeof out), 2);
    cr_expect(strstr(out, "same file"), "%s", out);
    const char *bad_num[] = {"--limit 1e20", "--limit 99999999999999999999999", "--limit 0", "--limit ''",
                             "--limit 5x", "--threads -1", "--threads 1e3", "--threads 100000"};
    for (size_t i = 0; i < sizeof bad_num / sizeof bad_num[0]; i++) {
        char args[256], opt[16];
        snprintf(args, sizeof args, "--model /nonexistent %s", bad_num[i]);
        snprintf(opt, sizeof opt, "%.*s", (int)strcspn(bad_num[i], " "), bad_num[i]);
        cr_expect_eq(run_cli(args, out, sizeof out), 2, "%s", bad_num[i]);
        cr_expect(strstr(out, opt) && strstr(out, "expected an integer"), "%s: %s", bad_num[i], out);
    }
}

/* Regression: an empty labels file crashed `eval zeroshot --tasks piqa|winogrande` (sanitizer
 * report); now an error naming the file, before the model is read. */
Test(zeroshot_cli, empty_labels_file_names_the_file) {
    char root[64], env[128], out[8192];
    cr_assert_eq(tu_mkdtemp(root, sizeof root), 0);
    write_file(root, "data/piqa/valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    write_file(root, "data/piqa/valid-labels.lst", "");
    write_file(root, "data/winogrande/dev.jsonl", "{\"sentence\": \"a _ b\", \"option1\": \"x\", \"option2\": \"y\"}\n");
    write_file(root, "data/winogrande/dev-labels.lst", "");
    snprintf(env, sizeof env, "APEX4_DATA='%s'", root);
    const char *tasks[2] = {"piqa", "winogrande"}, *files[2] = {"valid-labels.lst", "dev-labels.lst"};
    for (int i = 0; i < 2; i++) {
        char args[256];
        snprintf(args, sizeof args, "--model /nonexistent --tasks %s", tasks[i]);
        cr_expect_eq(run_cli_env(env, args, out, sizeof out), 2, "%s", out);
        cr_expect(strstr(out, files[i]) && strstr(out, "no labels"), "%s: %s", tasks[i], out);
        expect_no_sanitizer_report(out);
    }
    rm_rf(root);
}

Test(zeroshot_cli, usage_errors_exit_2) {
    char out[8192];
    cr_expect_eq(run_cli("", out, sizeof out), 2);
    cr_expect(strstr(out, "--model") != NULL, "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --tasks nosuchtask", out, sizeof out), 2);
    cr_expect(strstr(out, "unknown task 'nosuchtask'") != NULL, "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --limit -3", out, sizeof out), 2);
    cr_expect(strstr(out, "--limit") != NULL, "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --out /nonexistent-dir/r.json", out, sizeof out), 2);
    cr_expect(strstr(out, "/nonexistent-dir") != NULL, "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --modes w4a4-q7", out, sizeof out), 2);
    cr_expect(strstr(out, "--modes") != NULL, "%s", out);
    /* --device / --gemm: checked before anything is read */
    cr_expect_eq(run_cli("--model /nonexistent --device tpu", out, sizeof out), 2);
    cr_expect(strstr(out, "--device") && strstr(out, "cpu, cuda or auto"), "%s", out);
    cr_expect_eq(run_cli("--model /nonexistent --gemm int4", out, sizeof out), 2);
    cr_expect(strstr(out, "--gemm") && strstr(out, "exact or fake"), "%s", out);
    if (ak_device_count() == 0) {   /* no GPU here: --device cuda is refused, naming the option */
        cr_expect_eq(run_cli("--model /nonexistent --device cuda", out, sizeof out), 2);
        cr_expect(strstr(out, "--device cuda") && strstr(out, "no usable CUDA device"), "%s", out);
        cr_expect(strstr(out, "/nonexistent") == NULL, "nothing was loaded: %s", out);
    }
}

Test(zeroshot_cli, end_to_end_json_and_table) {
    char root[AX_PATH_LEN], tmp[64], args[8192], out[16384], err[AX_ERR_LEN];
    if (data_root_or_skip(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    snprintf(args, sizeof args, "--model %s/models/stories260K --tasks boolq,lambada_openai --modes fp16,atom-g128-o128 "
             "--limit 3 --threads 2 --out %s/zs.json --log-samples %s/samples.jsonl", root, tmp, tmp);
    int rc = run_cli(args, out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "lambada_openai") && strstr(out, "ppl"), "table: %s", out);
    cr_expect(strstr(out, "n/a") != NULL, "atom-g128-o128 does not fit dim 64: %s", out);
    char path[128], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/zs.json", tmp);
    cr_assert_eq(ax_read_file(path, &text, &len, err), 0, "%s", err);
    cJSON *d = cJSON_Parse(text);
    free(text);
    cr_assert(d, "results JSON parses");
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(d, "command")->valuestring, "eval zeroshot");
    cr_expect(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(d, "git_revision")));
    /* the job envelope (eval/job.h): default device auto = cpu without a GPU, gemm fake on cpu */
    if (ak_device_count() == 0) {
        cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(d, "device")->valuestring, "cpu");
        cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(d, "backend")->valuestring, "cpu (2 threads)");
        cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(d, "gemm")->valuestring, "fake");
        cr_expect_null(cJSON_GetObjectItemCaseSensitive(d, "gpu"));
    }
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(d, "kv4")));
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(d, "protocol"), "limit")->valuedouble, 3.0);
    const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(d, "modes"), 0);
    const cJSON *lam = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r0, "tasks"), "lambada_openai");
    double ppl = cJSON_GetObjectItemCaseSensitive(lam, "perplexity")->valuedouble;
    double mll = cJSON_GetObjectItemCaseSensitive(lam, "mean_ll_gold")->valuedouble;
    cr_expect_float_eq(ppl, exp(-mll), 1e-9 * ppl);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(d, "modes"), 1);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r1, "applicable")));
    /* --log-samples: one line per request of the one applicable mode (boolq 3 x 2 + lambada 3);
     * the fp16 lambada lines' gold lls average to mean_ll_gold */
    snprintf(path, sizeof path, "%s/samples.jsonl", tmp);
    int n;
    cJSON **ln = read_lines(path, &n);
    cr_expect_eq(n, 9, "%d sample lines", n);
    double sum = 0;
    int nl = 0;
    for (int i = 0; i < n; i++) {
        cr_expect_str_eq(key(ln[i], "mode")->valuestring, "fp16");
        if (!strcmp(key(ln[i], "task")->valuestring, "lambada_openai")) { sum += key(ln[i], "ll")->valuedouble; nl++; }
        cJSON_Delete(ln[i]);
    }
    free(ln);
    cr_expect_eq(nl, 3);
    cr_expect_float_eq(sum / 3, mll, 1e-12);
    cr_expect(strstr(out, "samples written to") != NULL, "%s", out);
    cr_expect(no_tmp_left(tmp));
    cJSON_Delete(d);
    rm_rf(tmp);
}
