/* fuzz_config.c — libFuzzer harness: config.json of a LLaMA checkpoint.
 *
 * Calls:   ae_config_load(path) (eval/model.h), as `apex4 make-model` and ae_model_load call it.
 *          The call lives in fuzz_targets.h (fz_config), shared with tests/test_fuzz_replay.c.
 * Input:   the bytes of config.json.
 * Seeds:   the models' config.json files and the tiny config of fuzz_targets.h (written by
 *          tests/fuzz/seeds.c into build-fuzz/corpus/config/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/config/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_config; -max_len=4096 there).
 * Run:     build-fuzz/fuzz/fuzz_config -runs=N -max_len=4096 build-fuzz/corpus/config
 *          tests/fuzz-corpus/config
 * A crash is saved under build-fuzz/crashes/config/; copy it to tests/fuzz-corpus/config/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "config");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_config(data, size), "config");
}
