#!/usr/bin/env bash
# eval/device_eval.sh — one call on the GPU machine for the GPU engine (run from the repository root
# there, after kernels/device_pack.sh packed .devpack/ here and the call carried the parts it needs):
#   bash eval/device_eval.sh [steps]      steps: comma list of
#     env       nvidia-smi, libraries, apex4 devices
#     fuzz      start the packed libFuzzer harnesses in the background (setsid; FUZZ_CORES cores,
#               FUZZ_SECONDS each, -jobs split by harness); `fuzzstat` collects their counts
#     test      Criterion: test_gpu, test_gpu_ops, test_engine (on the device)
#     check     apex4 check --device cuda (full sweep)
#     ppl13m    WikiText-2 ppl of wiki-gutenberg-13M, every standard mode, --gemm fake and exact
#     peer13m   the transformers peer's FP16 ppl of the same model (independent check)
#     zs        all 7 zero-shot tasks, full sets, fp16,w4a4-g32,w4a4-pc,atom-g128-o128
#     speed7b   LLaMA-2-7B-shaped checkpoint (make-model), s/window of apex4 vs transformers
#     prof7b    (after speed7b) per-op breakdown of apex4's forward (APEX4_PROFILE=1) and PyTorch's pieces
#     speed7bv  speed only, no files: random:llama2-7b vs transformers on the same config (--random-init):
#               fake and exact routes per mode, the wgmma path after a passing wgmma step, SPEED_PROF profiles
#     decode    bench gemm M = 1, 16 on the LLaMA-2-70B shapes vs cuBLAS FP16
#     sanitize  compute-sanitizer memcheck/racecheck/synccheck on check --quick (int8 and wgmma paths)
#     ncu       Nsight Compute sections of one GEMM per path (NCU_PATHS, NCU_MODE, NCU_M)
#     ranks     mpirun 1 and RANKS_NP ranks (one GPU each) on random:llama2-7b: equal numbers, throughput
#     l13       written llama2-13b checkpoint: resident vs --gpu-mem-limit 8GiB (same numbers, slowdown)
#     qsan      compute-sanitizer memcheck/racecheck on apex4 gemm --device cuda (quantizer + GEMM, M = 2304)
#     gemvms    gemv_ms_kernel (.devbin/apex4-ms, built with -DAK_GEMV_MS=1): memcheck, MS_CHECK=1 check, MS_BENCH=1 A/B
#     quant     bench gemm --quant-only: quantizer and fused RMSNorm + quantizer vs copy bandwidth
#     l70       random:llama2-70b, all 166 WikiText-2 windows, layer-major (L70_RUNS: one run per mode list)
#     virt      random:llama2-7b / llama2-70b layer-major (VIRT_MODELS, VIRT_WINDOWS, VIRT_MODES)
#     kv4gen    --kv4 ppl and generate, cuda vs cpu (13M)
#     wgmma     apex4 check of the wgmma paths, then bench gemm int8 vs wgmma vs wgmma-noepi
#     rho       apex4 bench rho (the rho-emulation curve)
# Results land in $OUT; a short table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=",${1:-env,test,ppl13m},"
OUT=${OUT:-/tmp/apex4-out}
mkdir -p "$OUT"
has() { [[ "$STEPS" == *",$1,"* ]]; }
P=/tmp/apex4-pack
mkdir -p $P
for f in .devpack/*.tar.xz; do [ -f "$f" ] && { xz -dc "$f" | tar -C $P -xf - || exit 1; }; done   # parts carried
[ -x $P/bin/apex4 ] || { echo "no apex4 binary: carry .devpack/bin-apex4.tar.xz"; exit 1; }
# a newer apex4 binary carried in .devbin/ (built here) replaces the packed one
for b in apex4 test_gpu test_gpu_ops test_engine test_gpu_engine test_gpu_layer test_gpu_fused test_gpu_calib; do
    if [ -x .devbin/$b ]; then cp .devbin/$b $P/bin/$b; fi
done
export LD_LIBRARY_PATH="$P/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export APEX4_DATA=$P/data APEX4_PROGRESS=0
BIN=$P/bin/apex4
D=$APEX4_DATA
T0=$(date +%s)
summary=()
step() { echo "== $1 ($(( $(date +%s) - T0 )) s)"; }
# same_numbers A.json B.json LABEL: every mode's ppl/NLL/KLD/top-1 equal (printed), evaluation seconds
same_numbers() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
lab = sys.argv[3]
def nums(d):
    return {m["mode"]: {k: m.get(k) for k in ("ppl", "nll", "nll_stderr", "kld", "kld_stderr", "kld_max", "top1_agreement",
                                             "top1_agreement_stderr", "predictions")} for m in d.get("modes", [])}
na, nb = nums(a), nums(b)
print(f"{lab}: numbers equal" if na == nb and a.get("reference_ppl") == b.get("reference_ppl") else f"{lab}: NUMBERS DIFFER {na} vs {nb}")
print(f"{lab}: reference ppl {a.get('reference_ppl')} vs {b.get('reference_ppl')}, ranks {a.get('ranks')} vs {b.get('ranks')}, "
      f"layer_major {a.get('layer_major')} vs {b.get('layer_major')}")
sa = a.get("reference_seconds", 0) + sum(m.get("seconds", 0) for m in a["modes"])
sb = b.get("reference_seconds", 0) + sum(m.get("seconds", 0) for m in b["modes"])
print(f"{lab}: evaluation seconds {sa:.2f} vs {sb:.2f}: ratio {sa / sb:.3f}; total {a.get('seconds')} vs {b.get('seconds')}")
PY
}

if has env; then
    step env
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv
    ldd $BIN | grep "not found" && echo "MISSING LIBRARIES"
    $BIN devices; nproc
fi

if has fuzz; then
    step fuzz
    FS=${FUZZ_SECONDS:-500}
    # FUZZ_JOBS="harness:jobs ..." (default 1 job per packed harness)
    hs=$(ls $P/fuzz/ | sed -n 's/^fuzz_//p')
    for h in $hs; do
        per=1
        for hj in ${FUZZ_JOBS:-}; do [ "${hj%%:*}" = "$h" ] && per=${hj##*:}; done
        mkdir -p /tmp/fz/$h
        (cd /tmp/fz/$h && ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
         LSAN_OPTIONS=suppressions=$P/fuzz/lsan.supp setsid nohup $P/fuzz/fuzz_$h -jobs=$per -workers=$per \
            -max_total_time=$FS -max_len=32768 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
            -artifact_prefix=/tmp/fz/$h/ $P/fuzz/corpus/$h >/tmp/fz/$h/main.log 2>&1 &)
        echo "fuzz_$h: $per job(s), $FS s"
    done
fi

if has test; then
    step test
    for t in ${TESTS:-test_gpu test_gpu_ops test_engine test_gpu_engine test_gpu_layer test_gpu_fused test_gpu_calib}; do
        [ -x $P/bin/$t ] || { echo "$t: not carried"; continue; }
        timeout ${TEST_TIMEOUT:-200} $P/bin/$t --verbose >"$OUT/$t.log" 2>&1
        grep -E "^\[(FAIL|----)\]" "$OUT/$t.log" | head -20
        summary+=("$t: $(grep -o 'Synthesis.*' "$OUT/$t.log" | tail -1)")
    done
fi

if has check; then
    step check
    timeout ${CHECK_TIMEOUT:-300} $BIN check --device cuda --threads ${CHECK_THREADS:-6} >"$OUT/check.log" 2>&1
    rc=$?; grep -vE '^\[ *[0-9]+/[0-9]+\] ok ' "$OUT/check.log" | tail -8
    summary+=("check rc=$rc: $(tail -1 "$OUT/check.log")")
fi

M13=$D/models/wiki-gutenberg-13M
if has ppl13m; then
    for g in ${PPL_GEMMS:-fake exact}; do
        step "ppl13m gemm $g"
        timeout ${PPL_TIMEOUT:-400} $BIN eval ppl --model $M13 --device cuda --gemm $g --modes ${PPL_MODES:-standard} \
            ${PPL_ARGS:-} --out "$OUT/ppl-wg13m-cuda-$g.json" >"$OUT/ppl13m-$g.log" 2>&1
        rc=$?; tail -16 "$OUT/ppl13m-$g.log"
        summary+=("ppl13m $g rc=$rc")
    done
fi

if has peer13m; then
    step peer13m
    timeout 300 python3 eval/peer_transformers.py --model $M13 --wikitext $D/data/wikitext-2-raw/wiki.test.raw \
        --modes fp16 >"$OUT/peer13m.jsonl" 2>"$OUT/peer13m.err"; rc=$?
    cat "$OUT/peer13m.jsonl"; tail -3 "$OUT/peer13m.err"
    summary+=("peer13m rc=$rc")
fi

if has zs; then
    step zs
    timeout ${ZS_TIMEOUT:-500} $BIN eval zeroshot --model $M13 --device cuda \
        --tasks piqa,arc_easy,arc_challenge,boolq,hellaswag,winogrande,lambada_openai --calib-dir ${CALIB_DIR:-$OUT} \
        --modes ${ZS_MODES:-fp16,w4a4-g32,w4a4-pc,atom-g128-o128} ${ZS_ARGS:-} --out "$OUT/zeroshot-wg13m-cuda.json" \
        >"$OUT/zs.log" 2>&1
    rc=$?; tail -22 "$OUT/zs.log"
    summary+=("zeroshot rc=$rc")
fi

if has speed7b; then
    step speed7b
    M7=/tmp/llama2-7b-shaped
    if [ ! -f $M7/config.json ]; then
        cat >/tmp/llama2-7b.json <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,"intermediate_size":11008,
 "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,
 "max_position_embeddings":4096,"rms_norm_eps":1e-05,"rope_theta":10000.0,"tie_word_embeddings":false,
 "torch_dtype":"float16","bos_token_id":1,"eos_token_id":2,"hidden_act":"silu"}
JSON
        /usr/bin/time -f "make-model %e s" $BIN make-model --config /tmp/llama2-7b.json --seed 1 --out $M7 --shards 3 2>&1 | tail -2
        cp $D/models/llama2-tokenizer/tokenizer.json $M7/
    fi
    W=${SPEED_WINDOWS:-12}
    for g in ${SPEED_GEMMS:-fake exact}; do
        timeout ${SPEED_TIMEOUT:-300} $BIN eval ppl --model $M7 --device cuda --gemm $g --modes ${SPEED_MODES:-fp16,w4a4-g128} \
            --max-windows $W --out "$OUT/speed7b-$g.json" >"$OUT/speed7b-$g.log" 2>&1
        echo "apex4 gemm $g rc=$?"; tail -6 "$OUT/speed7b-$g.log"
    done
    timeout 400 python3 eval/peer_transformers.py --model $M7 --wikitext $D/data/wikitext-2-raw/wiki.test.raw \
        --windows $W --modes fp16,fake-w4a4-g128 >"$OUT/peer7b.jsonl" 2>"$OUT/peer7b.err"
    echo "peer rc=$?"; cat "$OUT/peer7b.jsonl"; tail -3 "$OUT/peer7b.err"
fi

if has make7b && [ ! -f /tmp/llama2-7b-shaped/config.json ]; then
    step make7b
    cat >/tmp/llama2-7b.json <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,"intermediate_size":11008,
 "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,
 "max_position_embeddings":4096,"rms_norm_eps":1e-05,"rope_theta":10000.0,"tie_word_embeddings":false,
 "torch_dtype":"float16","bos_token_id":1,"eos_token_id":2,"hidden_act":"silu"}
JSON
    /usr/bin/time -f "make-model %e s" $BIN make-model --config /tmp/llama2-7b.json --seed 1 --out /tmp/llama2-7b-shaped --shards 3 2>&1 | tail -2
    cp $D/models/llama2-tokenizer/tokenizer.json /tmp/llama2-7b-shaped/
fi

if has prof7b; then
    # Where the FP16 forward spends its time: apex4 with APEX4_PROFILE=1 (each op synchronised) and
    # the same pieces in PyTorch (cuBLAS matmuls, sdpa, a torch.profiler table of transformers).
    step prof7b
    M7=/tmp/llama2-7b-shaped
    for md in ${PROF_MODES:-fp16}; do
        APEX4_PROFILE=${PROF_LEVEL:-1} timeout 300 $BIN eval ppl --model $M7 --device cuda --gemm ${PROF_GEMM:-exact} --modes $md \
            --max-windows ${PROF_WINDOWS:-3} --out "$OUT/prof7b-$md.json" >"$OUT/prof7b-$md.log" 2>&1
        echo "prof $md rc=$?"; grep -E "^profile|^stats|s/window|per window" "$OUT/prof7b-$md.log" | head -20
    done
    [ -n "${PEER_OPS:-}" ] && timeout 300 python3 eval/peer_ops.py ${PEER_OPS_MODEL:+--model $M7} 2>&1 | tail -30
fi

if has virt; then
    # Seeded virtual checkpoints generated on the device, layer-major: random:llama2-7b,seed=1 is the
    # same model as the make-model checkpoint of speed7b (same numbers expected), then LLaMA-2-70B.
    step virt
    TOK=$D/models/llama2-tokenizer/tokenizer.json
    for spec in ${VIRT_MODELS:-llama2-7b llama2-70b}; do
        timeout ${VIRT_TIMEOUT:-400} $BIN eval ppl --model random:$spec,seed=1 --tokenizer $TOK --device cuda \
            --modes ${VIRT_MODES:-fp16,w4a4-g128} --max-windows ${VIRT_WINDOWS:-4} --layer-major \
            --out "$OUT/virt-$spec.json" >"$OUT/virt-$spec.log" 2>&1
        rc=$?; echo "virt $spec rc=$rc"; tail -7 "$OUT/virt-$spec.log"
        summary+=("virt $spec rc=$rc")
    done
fi

if has kv4gen; then
    step kv4gen
    for dv in cuda cpu; do
        timeout 300 $BIN eval ppl --model $M13 --device $dv --kv4 --modes fp16,w4a4-g128 --max-windows 4 \
            --out "$OUT/kv4-$dv.json" >"$OUT/kv4-$dv.log" 2>&1
        echo "kv4 $dv rc=$?"; grep -E "^(fp16|w4a4)" "$OUT/kv4-$dv.log"
        timeout 120 $BIN generate --model $M13 --device $dv --prompt "The history of the city" -n 24 \
            >"$OUT/gen-$dv.txt" 2>&1
        echo "generate $dv rc=$?"; cat "$OUT/gen-$dv.txt" | tail -3
    done
fi

if has wgmma; then
    # The Hopper wgmma path (kernels/ak_gemm_sm90.cu): bit-exactness first, then speed with and without
    # the epilogue (the difference is the epilogue time the overlap does not hide).
    step wgmma
    timeout 300 $BIN check --device cuda --paths wgmma,wgmma-sync --threads ${CHECK_THREADS:-6} >"$OUT/check-wgmma.log" 2>&1
    rc=$?; grep -vE '^\[ *[0-9]+/[0-9]+\] ok ' "$OUT/check-wgmma.log" | tail -8
    summary+=("check wgmma rc=$rc: $(tail -1 "$OUT/check-wgmma.log")")
    [ $rc = 0 ] && WGMMA_OK=1
    if [ $rc = 0 ]; then
        timeout 240 $BIN bench gemm --shapes llama2-7b,llama2-70b --m 2048,4096 --paths int8,wgmma,wgmma-noepi \
            --modes w4a4-pc,w4a4-g32,w4a4-g64,w4a4-g128,w4a4-mixed-g128,w8a8 --runs 20 --warmup 3 --no-quant \
            --out "$OUT/bench-wgmma.json" >"$OUT/bench-wgmma.log" 2>&1
        echo "bench wgmma rc=$?"; tail -30 "$OUT/bench-wgmma.log"
    fi
fi

if has speed7bv; then
    # Speed only, no checkpoint files: apex4 on random:llama2-7b (weights generated on the device),
    # transformers on the same config built on the GPU with its own N(0, 0.02) init (--random-init).
    # apex4: --gemm fake (fp16 + the fake-quant simulation), --gemm exact per mode on the planner's
    # kernels, and (after a passing wgmma step, or SPEED_WGMMA=1) the exact route on the wgmma path.
    step speed7bv
    mkdir -p /tmp/l7cfg
    cat >/tmp/l7cfg/config.json <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,"intermediate_size":11008,
 "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,
 "max_position_embeddings":4096,"rms_norm_eps":1e-05,"rope_theta":10000.0,"tie_word_embeddings":false,
 "torch_dtype":"float16","bos_token_id":1,"eos_token_id":2,"hidden_act":"silu"}
JSON
    run7() {   # name gemm modes gemm-path
        APEX4_GEMM_PATH=$4 timeout 180 $BIN eval ppl --model random:llama2-7b,seed=1 \
            --tokenizer $D/models/llama2-tokenizer/tokenizer.json --device cuda --gemm $2 --modes $3 \
            --max-windows ${SPEED_WINDOWS:-12} --no-layer-major --no-progress --out "$OUT/speed7bv-$1.json" \
            >"$OUT/speed7bv-$1.log" 2>&1
        echo "apex4 $1 (gemm $2, path $4) rc=$?"; grep -E "per window" "$OUT/speed7bv-$1.log"
    }
    run7 fake fake ${SPEED_FAKE_MODES:-fp16,w4a4-g128} auto
    [ -n "${SPEED_EXACT_MODES-x}" ] && run7 exact exact ${SPEED_EXACT_MODES:-w4a4-g128,w4a4-mixed-g128,w4a4-pc,w8a8} auto
    if [ "${SPEED_WGMMA:-${WGMMA_OK:-0}}" = 1 ]; then
        run7 exact-wgmma exact ${SPEED_EXACT_MODES:-w4a4-g128,w4a4-mixed-g128,w4a4-pc,w8a8} wgmma
    fi
    if [ -n "${SPEED_PROF:-}" ]; then   # per-op breakdown (each op synchronised), ms per window
        for pm in $SPEED_PROF; do      # items mode:gemm:path
            IFS=: read -r md gm pth <<< "$pm"
            APEX4_PROFILE=1 APEX4_GEMM_PATH=${pth:-auto} timeout 120 $BIN eval ppl --model random:llama2-7b,seed=1 \
                --tokenizer $D/models/llama2-tokenizer/tokenizer.json --device cuda --gemm ${gm:-fake} --modes $md \
                --max-windows 3 --no-layer-major --no-progress >"$OUT/prof7bv-$md-$gm-${pth:-auto}.log" 2>&1
            echo "profile $pm rc=$?"; grep -E "^profile|^ +[a-z-]+ +[0-9]" "$OUT/prof7bv-$md-$gm-${pth:-auto}.log" | tail -16
        done
    fi
    timeout 150 python3 eval/peer_transformers.py --model /tmp/l7cfg --random-init --modes ${PEER_MODES:-fp16,fake-w4a4-g128} \
        --time-windows 8 >"$OUT/peer7bv.jsonl" 2>"$OUT/peer7bv.err"
    echo "peer rc=$?"; cat "$OUT/peer7bv.jsonl"; tail -2 "$OUT/peer7bv.err"
fi

if has decode; then
    # Decode GEMMs (M <= 16) of LLaMA-2-70B: apex4's kernels vs cuBLAS FP16 in the same run
    step decode
    timeout 200 $BIN bench gemm --shapes llama2-70b --m 1,16 --paths int8 \
        --modes w4a4-pc,w4a4-g128,w4a4-mixed-g128,w8a8 --runs 50 --warmup 5 --no-quant \
        --out "$OUT/bench-decode.json" >"$OUT/bench-decode.log" 2>&1
    echo "bench decode rc=$?"; tail -40 "$OUT/bench-decode.log"
fi

if has l70; then
    # LLaMA-2-70B (virtual, generated on the device), WikiText-2 test, all windows, layer-major,
    # one run per item of L70_RUNS (comma-separated modes; the FP16 reference is part of every run)
    step l70
    for md in ${L70_RUNS:-fp16,w4a4-g128}; do
        APEX4_GEMM_PATH=${L70_PATH:-auto} /usr/bin/time -f "wall %e s, max RSS %M KiB" timeout ${L70_TIMEOUT:-560} \
            $BIN eval ppl --model random:llama2-70b,seed=1 --tokenizer $D/models/llama2-tokenizer/tokenizer.json \
            --device cuda --modes $md --calib-dir /tmp ${L70_ARGS:-} --no-progress --out "$OUT/l70-${md//,/_}.json" \
            >"$OUT/l70-${md//,/_}.log" 2>&1
        rc=$?; echo "l70 $md rc=$rc"; tail -9 "$OUT/l70-${md//,/_}.log"
        summary+=("l70 $md rc=$rc")
    done
fi

if has sanitize; then
    # compute-sanitizer on a reduced sweep (check --quick, normal inputs): memcheck on every path,
    # racecheck and synccheck on the wgmma paths (works on the Firecracker runtime only: KINDS.md)
    step sanitize
    CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    for tool in ${SAN_TOOLS:-memcheck racecheck synccheck}; do
        paths=int8,wgmma,wgmma-sync; [ $tool = memcheck ] || paths=wgmma,wgmma-sync
        timeout ${SAN_TIMEOUT:-150} $CS --tool $tool --error-exitcode 9 $BIN check --device cuda --quick --no-llama \
            --inputs normal --paths $paths --modes ${SAN_MODES:-w4a4-g128,w4a4-g32,w4a4-mixed-g128,w8a8} --threads 1 \
            >"$OUT/san-$tool.log" 2>&1
        rc=$?; echo "compute-sanitizer $tool rc=$rc: $(grep -E 'ERROR SUMMARY|not supported' "$OUT/san-$tool.log" | tail -1)"
        tail -2 "$OUT/san-$tool.log"
        summary+=("sanitize $tool rc=$rc")
    done
fi

if has gemvms; then
    # gemv_ms_kernel (M <= 16) from a build with -DAK_GEMV_MS=1 carried as .devbin/apex4-ms: memcheck on
    # check --quick (M = 1, 7), the full check of the int8 path, then the decode bench A/B against the
    # packed binary (gemv_kernel) on the LLaMA-2-70B shapes
    step gemvms
    MS=.devbin/apex4-ms; [ -x $P/bin/apex4-ms ] && MS=$P/bin/apex4-ms
    CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    timeout ${SAN_TIMEOUT:-150} $CS --tool memcheck --show-backtrace device --error-exitcode 9 $MS check --device cuda \
        --quick --no-llama --inputs normal --paths ${MS_PATHS:-int8} --threads 1 >"$OUT/ms-memcheck.log" 2>&1
    echo "ms memcheck rc=$?"; grep -m12 -E "ERROR|Invalid|Illegal|illegal|at 0x|by thread|in .*\.cu:|Saved host|FAIL" "$OUT/ms-memcheck.log"; tail -3 "$OUT/ms-memcheck.log"
    if [ -n "${MS_CHECK:-}" ]; then
        timeout 300 $MS check --device cuda --paths int8,int4 --threads 6 >"$OUT/ms-check.log" 2>&1
        echo "ms check rc=$?"; tail -3 "$OUT/ms-check.log"
        timeout ${SAN_TIMEOUT:-150} $CS --tool racecheck --error-exitcode 9 $MS check --device cuda --quick --no-llama \
            --inputs normal --paths int8 --modes w4a4-g128,w4a4-mixed-g128,atom-g128-o128,w8a8 --threads 1 >"$OUT/ms-racecheck.log" 2>&1
        echo "ms racecheck rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/ms-racecheck.log" | tail -1)"
    fi
    if [ -n "${MS_BENCH:-}" ]; then
        for b in $MS $BIN; do
            timeout 120 $b bench gemm --shapes llama2-70b --m 1,16 --modes ${MS_MODES:-w4a4-pc,w4a4-g128} --paths int8 \
                --runs 50 --warmup 10 --no-quant --out "$OUT/ms-bench-$(basename $b).json" >"$OUT/ms-bench-$(basename $b).log" 2>&1
            echo "bench $(basename $b) rc=$?"; tail -14 "$OUT/ms-bench-$(basename $b).log"
        done
    fi
fi

if has qsan; then
    # compute-sanitizer memcheck + racecheck on the activation quantizer and the GEMM after it at M = 2304
    # (written for the reverted persistent-row quantizer v3, kept as a sanitizer sweep): apex4 gemm
    # --device cuda compares every byte with the CPU reference
    step qsan
    CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    for tool in memcheck racecheck; do
        for md in w4a4-pc w4a4-g128 w4a4-mixed-g128 atom-g128-o128 w8a8; do
            timeout 120 $CS --tool $tool --error-exitcode 9 $BIN gemm --mode $md --random ${QSAN_SHAPE:-2304,256,4096} \
                --dist heavy --device cuda --threads 8 >"$OUT/qsan-$tool-$md.log" 2>&1
            echo "qsan $tool $md rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/qsan-$tool-$md.log" | tail -1)"
        done
    done
fi

if has ncu; then
    # Nsight Compute on one GEMM (NCU_MODE at M = N = K = NCU_SIZE on NCU_PATH): pipe utilisation and
    # warp stall reasons (--clock-control none, as METHOD.md says)
    step ncu
    NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
    for pth in ${NCU_PATHS:-int8 wgmma}; do
        timeout 200 $NCU --clock-control none --section ComputeWorkloadAnalysis --section WarpStateStats \
            --section SpeedOfLight --kernel-name regex:'^(wgmma_)?gemm_kernel' --launch-skip 3 --launch-count 1 \
            $BIN bench gemm --shapes llama2-7b --m ${NCU_M:-2048} --paths $pth --modes ${NCU_MODE:-w4a4-g128} --runs 20 \
            --warmup 3 --no-quant >"$OUT/ncu-$pth.log" 2>&1
        echo "ncu $pth rc=$?"; grep -E "Pipe|Issue|Stall|Throughput|Duration|Warp Cycles|Eligible|Registers" "$OUT/ncu-$pth.log" | head -30
    done
fi

if has ranks; then
    # MPI ranks, one GPU each: random:llama2-7b FP16 + w4a4-g128, RANKS_WINDOWS windows, 1 rank then
    # RANKS_NP ranks; the JSON numbers must be equal, the throughput ratio is printed. Open MPI: the
    # machine's, else the packed relocatable runtime (kernels/device_pack.sh MPI_PACK=1).
    step ranks
    if ! command -v mpirun >/dev/null && [ -d $P/ompi ]; then
        export OPAL_PREFIX=$P/ompi PATH=$P/ompi/bin:$PATH
        export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$P/ompi/lib/x86_64-linux-gnu/openmpi/lib:$P/ompi/lib/x86_64-linux-gnu/pmix2/lib
        export OMPI_MCA_mca_base_component_show_load_errors=0
    fi
    command -v mpirun; nvidia-smi -L
    for np in 1 ${RANKS_NP:-2}; do
        /usr/bin/time -f "np $np wall %e s" timeout ${RANKS_TIMEOUT:-280} mpirun --allow-run-as-root --oversubscribe \
            -np $np -x LD_LIBRARY_PATH -x APEX4_DATA -x APEX4_PROGRESS ${OPAL_PREFIX:+-x OPAL_PREFIX} \
            $BIN eval ppl --model random:llama2-7b,seed=1 --tokenizer $D/models/llama2-tokenizer/tokenizer.json \
            --device cuda --modes ${RANKS_MODES:-fp16,w4a4-g128} --max-windows ${RANKS_WINDOWS:-166} --no-layer-major \
            --no-progress --out "$OUT/ranks-$np.json" >"$OUT/ranks-$np.log" 2>&1
        echo "ranks $np rc=$?"; grep -E "^(fp16|w4a4)|evaluation|wall" "$OUT/ranks-$np.log" | tail -5
    done
    same_numbers "$OUT/ranks-1.json" "$OUT/ranks-${RANKS_NP:-2}.json" ranks
fi

if has l13; then
    # A written LLaMA-2-13B-shaped checkpoint (make-model, 26 GB on this machine's disk): resident vs
    # --gpu-mem-limit 8GiB (layer-major): the same numbers, and the slowdown
    step l13
    M13B=/tmp/llama2-13b-shaped
    if [ ! -f $M13B/config.json ]; then
        /usr/bin/time -f "make-model 13b %e s" $BIN make-model --config llama2-13b --seed 1 --out $M13B --shards 6 2>&1 | tail -2
        cp $D/models/llama2-tokenizer/tokenizer.json $M13B/
    fi
    for cap in none ${L13_CAP:-8GiB}; do
        a=""; [ $cap = none ] || a="--gpu-mem-limit $cap"
        /usr/bin/time -f "l13 $cap wall %e s" timeout 280 $BIN eval ppl --model $M13B --device cuda \
            --modes ${L13_MODES:-fp16,w4a4-g128} --max-windows ${L13_WINDOWS:-16} $a --no-progress \
            --out "$OUT/l13-$cap.json" >"$OUT/l13-$cap.log" 2>&1
        echo "l13 $cap rc=$?"; tail -6 "$OUT/l13-$cap.log"
    done
    same_numbers "$OUT/l13-none.json" "$OUT/l13-${L13_CAP:-8GiB}.json" l13
fi

if has quant; then
    # the activation quantizer and the fused RMSNorm + quantizer against the device copy bandwidth
    step quant
    timeout 150 $BIN bench gemm --quant-only --m 512,2048,4096 --modes ${QUANT_MODES:-w4a4-g128,w4a4-pc,w4a4-mixed-g128,w8a8,atom-g128-o128} \
        --out "$OUT/bench-quant.json" >"$OUT/bench-quant.log" 2>&1
    echo "bench quant rc=$?"; tail -40 "$OUT/bench-quant.log"
fi

if has rho; then
    step rho
    timeout 200 $BIN bench rho --out "$OUT/rho-emulation-h200.json" >"$OUT/rho.log" 2>&1
    echo "bench rho rc=$?"; tail -8 "$OUT/rho.log"
fi

if has fuzzstat; then
    step fuzzstat
    for i in $(seq 1 ${FUZZ_WAIT:-600}); do pgrep -f "$P/fuzz/fuzz_" >/dev/null || break; sleep 1; done
    pkill -INT -f "$P/fuzz/fuzz_" 2>/dev/null; sleep 2
    for d in /tmp/fz/*/; do
        h=$(basename $d)
        n=$(cat $d/fuzz-*.log $d/main.log 2>/dev/null | grep -o 'stat::number_of_executed_units: [0-9]*' | awk '{s+=$2} END {print s+0}')
        cr=$(ls $d | grep -cE '^(crash|leak|timeout|oom)-')
        echo "fuzz_$h: executed $n, findings $cr"
        echo "fuzz_$h $n $cr" >> "$OUT/fuzz-counts.txt"
        if [ "$n" = 0 ]; then ls -la $d; tail -n 5 $d/*.log; cp $d/main.log "$OUT/fuzz-$h-main.log" 2>/dev/null; fi
        ls $d | grep -E '^(crash|leak|timeout|oom)-' | head -3 | while read f; do cp $d/$f "$OUT/" 2>/dev/null; done
    done
fi

step summary
for s in "${summary[@]}"; do echo "  $s"; done
# one archive of every result (the call returns a limited number of files)
(cd "$OUT" && tar czf /tmp/apex4-results.tgz --exclude=results.tgz --exclude='*.bin' . && rm -rf ./* && mv /tmp/apex4-results.tgz results.tgz)
