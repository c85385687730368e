/* fuzz_h5case.c — libFuzzer harness: HDF5 GEMM case files.
 *
 * Calls:   aq_case_read_inputs(path, atom-g128-o128, k_splits 1) and aq_case_compare(fixed case, path)
 *          (quant/aq_case.h), as `apex4 gemm --in` and `--compare` call them; after each call no HDF5
 *          object may be left open.
 *          The call lives in fuzz_targets.h (fz_h5case), shared with tests/test_fuzz_replay.c.
 * Input:   the bytes of the .h5 file.
 * Seeds:   cases written by aq_case_write for w4a4-g128, w8a8, w4a4-mixed-g128 and atom modes (small M,
 *          N, K) (written by tests/fuzz/seeds.c into build-fuzz/corpus/h5case/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/h5case/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_h5case; -max_len=16384 there).
 * Run:     build-fuzz/fuzz/fuzz_h5case -runs=N -max_len=16384 build-fuzz/corpus/h5case
 *          tests/fuzz-corpus/h5case
 * A crash is saved under build-fuzz/crashes/h5case/; copy it to tests/fuzz-corpus/h5case/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "h5case");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_h5case(data, size), "h5case");
}
