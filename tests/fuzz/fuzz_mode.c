/* fuzz_mode.c — libFuzzer harness: mode strings (--mode).
 *
 * Calls:   aq_mode_parse (quant/aq.h), as every --mode option is parsed (gemm, ppl, zeroshot, generate,
 *          bench).
 *          The call lives in fuzz_targets.h (fz_mode), shared with tests/test_fuzz_replay.c.
 * Input:   the mode string (up to the first NUL, as argv would carry it).
 * Seeds:   aq_standard_modes and parametric forms (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/mode/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/mode/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_mode; -max_len=64 there).
 * Run:     build-fuzz/fuzz/fuzz_mode -runs=N -max_len=64 build-fuzz/corpus/mode tests/fuzz-corpus/mode
 * A crash is saved under build-fuzz/crashes/mode/; copy it to tests/fuzz-corpus/mode/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "mode");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_mode(data, size), "mode");
}
