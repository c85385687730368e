/* fuzz_piqa.c — libFuzzer harness: PIQA valid.jsonl + valid-labels.lst.
 *
 * Calls:   ad_zs_load(piqa, tmp data root) (datasets/zeroshot.h), as `apex4 zeroshot --tasks piqa`
 *          does.
 *          The call lives in fuzz_targets.h (fz_piqa), shared with tests/test_fuzz_replay.c.
 * Input:   valid.jsonl, a NUL byte, valid-labels.lst.
 * Seeds:   the first 12 records and labels of the real files (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/piqa/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/piqa/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_piqa; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_piqa -runs=N -max_len=8192 build-fuzz/corpus/piqa
 *          tests/fuzz-corpus/piqa
 * A crash is saved under build-fuzz/crashes/piqa/; copy it to tests/fuzz-corpus/piqa/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "piqa");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_piqa(data, size), "piqa");
}
