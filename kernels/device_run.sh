#!/usr/bin/env bash
# kernels/device_run.sh — one call on the GPU machine: environment, Criterion GPU tests, the full
# bit-exact sweep (apex4 check --device cuda), compute-sanitizer memcheck over a reduced sweep, and
# apex4 bench gemm (JSON to $OUT/bench.json); prints a short table last.
#
# Usage (from the repository root, on the device): bash kernels/device_run.sh [steps]
#   steps: comma list of env,test,check,memcheck,bench,sass (default: env,test,check,memcheck,bench)
# Binaries: .devbin/apex4 and .devbin/test_gpu if present (built on the dev machine with
#   make BUILD=build-kernels and copied there; carry .devbin and .devlibs), else built here with
#   make BUILD=build-dev -j16 (needs cjson, hdf5, openblas, criterion on the device).
# Shared libraries missing on the device are carried in .devlibs/ (LD_LIBRARY_PATH); OpenBLAS is
# replaced by a stub (.devlibs/stub) when absent: check/bench/test_gpu never call BLAS.
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=",${1:-env,test,check,memcheck,bench},"
OUT=${OUT:-/tmp/apex4-out}
mkdir -p "$OUT"
has() { [[ "$STEPS" == *",$1,"* ]]; }

export LD_LIBRARY_PATH="$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! ldconfig -p | grep -q 'libopenblas.so.0'; then export LD_LIBRARY_PATH="$PWD/.devlibs/stub:$LD_LIBRARY_PATH"; fi
if [ -x .devbin/apex4 ]; then
    BIN=.devbin/apex4; TEST=.devbin/test_gpu
else
    make BUILD=build-dev -j16 >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
    make BUILD=build-dev -j16 build-dev/tests/test_gpu >>"$OUT/build.log" 2>&1
    BIN=build-dev/apex4; TEST=build-dev/tests/test_gpu
fi
T0=$(date +%s)
summary=()

if has env; then
    echo "== env"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv
    ldd "$BIN" | grep -E "not found" && echo "MISSING LIBRARIES"
    $BIN devices
fi

if has test; then
    echo "== Criterion GPU tests"
    timeout ${TEST_TIMEOUT:-150} $TEST --verbose 2>&1 | tail -25 | tee "$OUT/test_gpu.log"
    summary+=("test_gpu: $(grep -o 'Synthesis.*' "$OUT/test_gpu.log" | tail -1)")
fi

if has check; then
    echo "== apex4 check --device cuda (full sweep)"
    timeout ${CHECK_TIMEOUT:-300} $BIN check --device cuda --threads 16 ${CHECK_ARGS:-} >"$OUT/check.log" 2>&1
    rc=$?
    grep -vE '^\[ *[0-9]+/[0-9]+\] ok ' "$OUT/check.log" | tail -20
    summary+=("check rc=$rc: $(tail -1 "$OUT/check.log")")
fi

if has memcheck; then
    echo "== compute-sanitizer memcheck (reduced sweep)"
    timeout ${MEMCHECK_TIMEOUT:-240} compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
        $BIN check --device cuda --quick --inputs normal,adversarial --threads 4 >"$OUT/memcheck.log" 2>&1
    rc=$?
    grep -E "ERROR SUMMARY|Invalid|check summary" "$OUT/memcheck.log" | tail -8
    summary+=("memcheck rc=$rc: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) / $(grep 'check summary' "$OUT/memcheck.log" | tail -1)")
fi

if has bench; then
    echo "== apex4 bench gemm"
    timeout ${BENCH_TIMEOUT:-300} $BIN bench gemm --out "$OUT/bench.json" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
    rc=$?
    summary+=("bench rc=$rc")
    echo "-- compute-bound M=4096 N=K=8192 and memory-bound M=16 (llama2-70b)"
    grep -E "^llama2-70b +q_proj/o_proj +4096 " "$OUT/bench.log"
    grep -E "^llama2-70b .* +16 +" "$OUT/bench.log" | grep -E "cublas|w4a4-pc|g128|mixed"
    echo "-- quantize-x (M=4096)"
    grep -E "^(w4a4-g128|w4a4-pc|atom-g128-o128|w4a4-mixed-g128) +4096 " "$OUT/bench.log"
    grep -E "^# (device|NVIDIA|H)" "$OUT/bench.log"
    grep -E "^# .*(failed|error)" "$OUT/bench.log" | head -5
fi

if has sass; then
    echo "== SASS/ptxas of the GEMM (sm_90a)"
    nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Iquant -Ikernels -Xptxas -v -c kernels/ak_gemm.cu \
        -o /tmp/ak_gemm.o 2>&1 | grep -E "registers|spill" | head -12
    cuobjdump --dump-sass /tmp/ak_gemm.o >"$OUT/ak_gemm.sass" 2>&1
    grep -cE "IMMA" "$OUT/ak_gemm.sass"
fi

echo "== summary ($(( $(date +%s) - T0 )) s)"
for s in "${summary[@]}"; do echo "  $s"; done

if has ncu; then
    echo "== ncu: apex4 GEMM at M=4096 N=K=8192 (${NCU_MODES:-w4a4-pc})"
    timeout ${NCU_TIMEOUT:-240} ncu --clock-control none --kernel-name regex:gemm_kernel --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
        --section MemoryWorkloadAnalysis --section Occupancy \
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio,regex:sm__pipe_tensor.*_cycles_active.avg.pct_of_peak_sustained_active" \
        $BIN bench gemm --shapes llama2-70b --m 4096 --modes ${NCU_MODES:-w4a4-pc} --runs 20 --warmup 1 --no-quant \
        >"$OUT/ncu.log" 2>&1
    grep -E "Throughput|Issued|Eligible|Warp Cycles|Duration|Spilling|Executed Ipc|pipe_tensor" "$OUT/ncu.log" | head -30
    grep -E "issue_stalled" "$OUT/ncu.log" | awk '$NF > 0.05' | sort -k3 -n -r | head -12
fi
