/* fuzz_lambada.c — libFuzzer harness: LAMBADA (OpenAI) lambada_test.jsonl.
 *
 * Calls:   ad_zs_load(lambada_openai, tmp data root) (datasets/zeroshot.h).
 *          The call lives in fuzz_targets.h (fz_lambada), shared with tests/test_fuzz_replay.c.
 * Input:   lambada_test.jsonl.
 * Seeds:   the first 12 records of the real file (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/lambada/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/lambada/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_lambada; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_lambada -runs=N -max_len=8192 build-fuzz/corpus/lambada
 *          tests/fuzz-corpus/lambada
 * A crash is saved under build-fuzz/crashes/lambada/; copy it to tests/fuzz-corpus/lambada/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "lambada");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_lambada(data, size), "lambada");
}
