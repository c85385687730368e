/* fuzz_tokenize.c — libFuzzer harness: text to tokenize.
 *
 * Calls:   ae_tokenize + ae_detokenize (eval/tokenizer.h) with the LLaMA-2 tokenizer of the data root,
 *          as `apex4 tokenize --file` and the perplexity run do; needs the data root (the harness is
 *          skipped without it).
 *          The call lives in fuzz_targets.h (fz_tokenize), shared with tests/test_fuzz_replay.c.
 * Input:   UTF-8 (or not) text.
 * Seeds:   the first KB of the WikiText-2 files and a few hand-written strings (written by
 *          tests/fuzz/seeds.c into build-fuzz/corpus/tokenize/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/tokenize/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_tokenize; -max_len=4096 there).
 * Run:     build-fuzz/fuzz/fuzz_tokenize -runs=N -max_len=4096 build-fuzz/corpus/tokenize
 *          tests/fuzz-corpus/tokenize
 * A crash is saved under build-fuzz/crashes/tokenize/; copy it to tests/fuzz-corpus/tokenize/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "tokenize");
    /* Load the LLaMA-2 tokenizer now (a few seconds under ASan), outside the per-input -timeout. */
    fz_libfuzzer(fz_tokenize((const uint8_t *)"", 0), "tokenize");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_tokenize(data, size), "tokenize");
}
