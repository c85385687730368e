# apex4 — build, test and bench.
#   make              build build/apex4 and build/libapex4.a (CUDA kernels too when nvcc is found)
#   make CUDA=0       CPU-only build (no nvcc needed)
#   make test         build and run the Criterion suite (tests/test_*.c, one binary per file)
#   make test SAN=1   the same under ASan+UBSan (into build-san/)
#   make test T=quant run only tests/test_quant.c
#   make bench        CPU reference GEMM throughput (and GPU benchmarks when a device is present)
#   make fuzz         libFuzzer harnesses of tests/fuzz/ (clang, ASan+UBSan) into build-fuzz/, each run
#                     FUZZ_TIME seconds (default 60); fails if any finds a crash. FUZZ_ONLY=a,b runs
#                     only those; make fuzz-build only builds. See "fuzzing" below.
# BUILD=dir puts the objects elsewhere (parallel builds in one tree).

SAN   ?= 0
ifeq ($(SAN),1)
BUILD ?= build-san
else
BUILD ?= build
endif

NVCC  ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(NVCC),)
CUDA  ?= 0
else
CUDA  ?= 1
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

CC    ?= cc
ARCH  ?= -march=x86-64-v2 -mavx2 -mfma -mf16c
ifneq ($(shell uname -m),x86_64)
ARCH  :=
endif
OPT   ?= -O2
GIT_REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
PKGS  := libcjson hdf5-serial openblas libpcre2-8 libutf8proc plplot
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

CFLAGS  = -std=c11 $(OPT) -g $(ARCH) -Wall -Wextra -Werror -ffp-contract=off -fno-fast-math \
          -pthread -D_GNU_SOURCE -DAPEX4_GIT_REV=\"$(GIT_REV)\" \
          -Iquant -Ikernels -Ieval -Idatasets -Ireports $(PKG_CFLAGS)
LDLIBS  = $(PKG_LIBS) -lm -pthread
# Open MPI (Debian openmpi-bin + libopenmpi-dev): detected through mpicc; without it (or MPI=0) apex4
# builds without MPI and `mpirun -np N apex4 ...` is refused with a message (eval/dist.h).
MPICC ?= $(shell command -v mpicc 2>/dev/null)
MPI   ?= $(if $(MPICC),1,0)
ifeq ($(MPI),1)
CFLAGS += -DAPEX4_MPI=1 $(shell $(MPICC) --showme:compile)
LDLIBS += $(shell $(MPICC) --showme:link)
endif
ifeq ($(SAN),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
# FUZZ=1 (set by `make fuzz` for its own sub-make, with CC=clang): coverage for libFuzzer, ASan+UBSan.
FUZZ ?= 0
FUZZ_CFLAGS ?=
ifeq ($(FUZZ),1)
CFLAGS += -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
          $(FUZZ_CFLAGS)
LDFLAGS += -fsanitize=address,undefined
endif

# Library sources: everything in the module folders except the CLI front ends (cmd_*.c).
LIB_SRC := $(filter-out $(wildcard */cmd_*.c),$(wildcard quant/*.c eval/*.c datasets/*.c reports/*.c))
CLI_SRC := apex4.c $(wildcard quant/cmd_*.c kernels/cmd_*.c eval/cmd_*.c datasets/cmd_*.c reports/cmd_*.c)
CU_SRC  := $(wildcard kernels/*.cu)

ifeq ($(CUDA),1)
# sm_90a (Hopper: INT8 tensor cores, wgmma) plus sm_80/86/89 (native INT4 mma); never --use_fast_math.
NVCC_GENCODE ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 \
                -gencode=arch=compute_86,code=sm_86 -gencode=arch=compute_89,code=sm_89
NVCCFLAGS ?= -O3 -std=c++17 $(NVCC_GENCODE) -Xcompiler -Wall,-Wextra,-Werror,-fPIC \
             -Iquant -Ikernels -Ireports -lineinfo
KOBJ    := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC)) \
           $(patsubst %.c,$(BUILD)/%.o,$(filter-out $(wildcard kernels/*_nocuda.c) kernels/cmd_%.c,$(wildcard kernels/*.c)))
CFLAGS  += -DAPEX4_CUDA=1 -I$(CUDA_HOME)/include
LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
else
KOBJ    := $(patsubst %.c,$(BUILD)/%.o,$(wildcard kernels/*_nocuda.c))
endif

LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
CLI_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
HDRS    := $(wildcard quant/*.h kernels/*.h eval/*.h datasets/*.h reports/*.h)

all: $(BUILD)/apex4 $(BUILD)/libapex4.a

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(HDRS) $(wildcard kernels/*.cuh) $(wildcard kernels/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libapex4.a: $(LIB_OBJ) $(KOBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/apex4: $(CLI_OBJ) $(BUILD)/libapex4.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libapex4.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(BUILD)/libapex4.a $(BUILD)/apex4
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(BUILD)/libapex4.a $(LDLIBS) -lcriterion
# The replay test includes the harnesses' shared entry points.
$(BUILD)/tests/test_fuzz_replay: tests/fuzz/fuzz_targets.h

# Criterion runs each test in its own process; ASAN needs protect_shadow_gap=0 next to the CUDA runtime.
# tests/fuzz/lsan.supp: leaks inside libhdf5 on corrupt files (replayed by test_fuzz_replay).
TEST_ENV = APEX4_BIN=$(CURDIR)/$(BUILD)/apex4 ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1 \
           LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
comma := ,
T ?=
ifneq ($(T),)
TEST_RUN := $(patsubst %,$(BUILD)/tests/test_%,$(subst $(comma), ,$(T)))
else
TEST_RUN := $(TEST_BIN)
endif

test: $(TEST_RUN)
	@fail=0; for t in $(TEST_RUN); do echo "== $$t"; $(TEST_ENV) $$t --jobs 2 --verbose || fail=1; done; \
	 if [ $$fail = 0 ]; then echo "ALL TEST BINARIES PASSED"; else echo "SOME TESTS FAILED"; exit 1; fi

bench: $(BUILD)/apex4
	$(BUILD)/apex4 bench ref --m 512 --n 4096 --k 4096 --mode w4a4-g128
	@if $(BUILD)/apex4 devices >/dev/null 2>&1; then $(BUILD)/apex4 bench gemm; \
	 else echo "GPU benchmark skipped: no CUDA device"; fi

# ---- fuzzing -------------------------------------------------------------------------------------
# `make fuzz` re-runs make with FUZZ=1 CUDA=0 SAN=0 CC=$(FUZZ_CC) BUILD=$(FUZZ_BUILD): the library is
# compiled with -fsanitize=fuzzer-no-link,address,undefined into $(FUZZ_BUILD)/libapex4.a, each
# tests/fuzz/fuzz_<name>.c is linked with -fsanitize=fuzzer,address,undefined into
# $(FUZZ_BUILD)/fuzz/fuzz_<name>, tests/fuzz/seeds.c writes the seeds (from the data root FUZZ_DATA)
# into $(FUZZ_BUILD)/corpus/<name>/, and each harness runs FUZZ_TIME seconds on that corpus plus the
# saved inputs of tests/fuzz-corpus/<name>/, with -max_len=FUZZ_MAXLEN_<name> (default 8192),
# -rss_limit_mb=2048, -timeout=10, leak detection on. Crashes land in $(FUZZ_BUILD)/crashes/<name>/,
# logs in $(FUZZ_BUILD)/logs/<name>.log; the run fails if any harness finds one. FUZZ_ARGS adds
# libFuzzer flags (e.g. FUZZ_ARGS=-runs=1000000), FUZZ_CFLAGS compiler flags (e.g. -Wno-error).
# The tokenize harness needs the data root (LLaMA-2 tokenizer) and is skipped without one.
FUZZ_TIME  ?= 60
FUZZ_CC    ?= clang
ifeq ($(origin BUILD),command line)
FUZZ_BUILD ?= $(BUILD)
else
FUZZ_BUILD ?= build-fuzz
endif
FUZZ_DATA  ?= $(or $(APEX4_DATA),$(firstword $(wildcard ../shared ../../shared)))
FUZZ_ONLY  ?=
FUZZ_ARGS  ?=
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_RUN   := $(if $(FUZZ_ONLY),$(subst $(comma), ,$(FUZZ_ONLY)),$(FUZZ_NAMES))
FUZZ_RUN   := $(if $(FUZZ_DATA),$(FUZZ_RUN),$(filter-out tokenize,$(FUZZ_RUN)))
FUZZ_BINS  := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_NAMES)) $(BUILD)/fuzz/seeds
FUZZ_MAXLEN_config          := 4096
FUZZ_MAXLEN_model_index     := 4096
FUZZ_MAXLEN_safetensors     := 32768
FUZZ_MAXLEN_tokenizer       := 32768
FUZZ_MAXLEN_tokenize        := 4096
FUZZ_MAXLEN_h5case          := 16384
FUZZ_MAXLEN_mode            := 64
FUZZ_SUB = $(MAKE) --no-print-directory FUZZ=1 CUDA=0 SAN=0 CC=$(FUZZ_CC) BUILD=$(FUZZ_BUILD)

fuzz:
	+$(FUZZ_SUB) fuzz-run
fuzz-build:
	+$(FUZZ_SUB) fuzz-bins

fuzz-bins: $(FUZZ_BINS)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_targets.h $(BUILD)/libapex4.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/fuzz -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(BUILD)/libapex4.a $(LDLIBS)

$(BUILD)/fuzz/seeds: tests/fuzz/seeds.c tests/fuzz/fuzz_targets.h $(BUILD)/libapex4.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/fuzz $(LDFLAGS) -o $@ $< $(BUILD)/libapex4.a $(LDLIBS)

# allocator_may_return_null=1: a malloc over ASan's 1 TiB cap returns NULL as glibc's would (libhdf5
# asks for such sizes on corrupt headers and handles NULL); over -rss_limit_mb it is still a crash.
FUZZ_ENV = ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(if $(FUZZ_DATA),APEX4_DATA=$(FUZZ_DATA))

fuzz-run: fuzz-bins
	@test "$(FUZZ)" = 1 || { echo "fuzz-run: use make fuzz"; exit 2; }
	$(FUZZ_ENV) $(BUILD)/fuzz/seeds "$(FUZZ_DATA)" $(BUILD)/corpus
	@mkdir -p $(BUILD)/logs; fail=0; \
	 one() { h=$$1; len=$$2; mkdir -p $(BUILD)/corpus/$$h $(BUILD)/crashes/$$h; \
	   saved=; [ -d tests/fuzz-corpus/$$h ] && saved=tests/fuzz-corpus/$$h; \
	   $(FUZZ_ENV) $(BUILD)/fuzz/fuzz_$$h -max_total_time=$(FUZZ_TIME) -max_len=$$len -rss_limit_mb=2048 \
	     -timeout=10 -detect_leaks=1 -print_final_stats=1 -artifact_prefix=$(BUILD)/crashes/$$h/ \
	     $(FUZZ_ARGS) $(BUILD)/corpus/$$h $$saved >$(BUILD)/logs/$$h.log 2>&1; rc=$$?; \
	   ex=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(BUILD)/logs/$$h.log); \
	   eps=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $(BUILD)/logs/$$h.log); \
	   ncr=$$(ls -A $(BUILD)/crashes/$$h | wc -l); \
	   echo "fuzz_$$h: number_of_executed_units $${ex:-?} ($${eps:-?} exec/s, max_len $$len), rc $$rc, $$ncr crash file(s)"; \
	   if [ $$rc != 0 ] || [ $$ncr != 0 ]; then fail=1; tail -n 80 $(BUILD)/logs/$$h.log; \
	     echo "fuzz_$$h: FAILED; inputs in $(BUILD)/crashes/$$h/, log $(BUILD)/logs/$$h.log"; fi; }; \
	 $(foreach h,$(FUZZ_RUN),one $(h) $(or $(FUZZ_MAXLEN_$(h)),8192);) \
	 $(if $(filter tokenize,$(FUZZ_NAMES)),$(if $(FUZZ_DATA),,echo "fuzz_tokenize: skipped: no data root";)) \
	 if [ $$fail = 0 ]; then echo "ALL FUZZ HARNESSES PASSED"; else echo "SOME FUZZ HARNESSES FAILED"; exit 1; fi

clean:
	rm -rf build build-san build-*

.PHONY: all test bench clean fuzz fuzz-build fuzz-bins fuzz-run
.SECONDARY:
.DELETE_ON_ERROR:
