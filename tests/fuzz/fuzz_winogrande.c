/* fuzz_winogrande.c — libFuzzer harness: WinoGrande dev.jsonl + dev-labels.lst.
 *
 * Calls:   ad_zs_load(winogrande, tmp data root) (datasets/zeroshot.h).
 *          The call lives in fuzz_targets.h (fz_winogrande), shared with tests/test_fuzz_replay.c.
 * Input:   dev.jsonl, a NUL byte, dev-labels.lst.
 * Seeds:   the first 12 records and labels of the real files (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/winogrande/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/winogrande/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_winogrande; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_winogrande -runs=N -max_len=8192 build-fuzz/corpus/winogrande
 *          tests/fuzz-corpus/winogrande
 * A crash is saved under build-fuzz/crashes/winogrande/; copy it to tests/fuzz-corpus/winogrande/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "winogrande");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_winogrande(data, size), "winogrande");
}
