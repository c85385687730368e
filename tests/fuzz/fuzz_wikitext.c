/* fuzz_wikitext.c — libFuzzer harness: WikiText-2 raw text.
 *
 * Calls:   ad_wikitext_load("test") (datasets/wikitext.h) with APEX4_DATA pointing at a tmp data root,
 *          as the perplexity run loads it.
 *          The call lives in fuzz_targets.h (fz_wikitext), shared with tests/test_fuzz_replay.c.
 * Input:   the bytes of data/wikitext-2-raw/wiki.test.raw.
 * Seeds:   the first 4 KB of wiki.test.raw and wiki.valid.raw (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/wikitext/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/wikitext/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_wikitext; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_wikitext -runs=N -max_len=8192 build-fuzz/corpus/wikitext
 *          tests/fuzz-corpus/wikitext
 * A crash is saved under build-fuzz/crashes/wikitext/; copy it to tests/fuzz-corpus/wikitext/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "wikitext");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_wikitext(data, size), "wikitext");
}
