# ringserve — top-level build.
#
#   make                 build the daemon, the client library, the tools and the tests
#   make test            build and run every test (plus ASan/UBSan and TSan passes)
#   make run             start the daemon with the default model and run a demo client
#   make bench           run the benchmarks; prints a table and writes JSON
#   make test-openai-node  the OpenAI bridge against the official `openai` npm package
#   make fuzz            build and briefly run the libFuzzer targets (clang)
#   make SAN=address,undefined | SAN=thread    sanitizer build, in its own build folder
#   make V=1             print the full compiler commands (default: one line per file)
#   make format | lint
#   make vocab-refs      fetch the tokenizer tests' reference vocabularies (.cache/vocab-refs)
#   make interop         ringserve against llama.cpp on llama.cpp-quantized files (ids, tok/s)
#
# Every configuration builds into its own folder (build/, build-address-undefined/, ...),
# and a folder remembers its flags: changing them rebuilds what they affect.

comma := ,
SAN ?=
O ?= build$(if $(SAN),-$(subst $(comma),-,$(SAN)))

CC ?= cc
OPT ?= -O2
CFLAGS_BASE := -std=gnu11 $(OPT) -g -Wall -Wextra -Wshadow -Wno-unused-parameter \
	-Wstrict-prototypes -Wmissing-prototypes -fPIC -pthread -D_GNU_SOURCE -I. \
	-I/usr/include/x86_64-linux-gnu/openblas-pthread
ifneq ($(SAN),)
CFLAGS_BASE += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS_SAN := -fsanitize=$(SAN)
endif
RS_CFLAGS := $(CFLAGS_BASE) $(CFLAGS)
RS_LDFLAGS := $(LDFLAGS_SAN) $(LDFLAGS)
LDLIBS_ENGINE := -lopenblas -lm
LDLIBS_SYS := -luring -lnuma -lpthread -lm

# --- CUDA: built whenever nvcc is found --------------------------------------------------
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
ifneq ($(NVCC),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCHS ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80
NVCCFLAGS ?= -O2 -g -std=c++17 $(CUDA_ARCHS) -Xcompiler -fPIC,-Wall -I.
CUDA_SRC := $(wildcard kernels/cuda/*.cu)
RS_CFLAGS += -DRS_HAVE_CUDA_BACKEND=1 -I$(CUDA_HOME)/include
LDLIBS_ENGINE += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
HAVE_CUDA_MSG := nvcc ✓ $(NVCC) (CUDA backend is built)
else
CUDA_SRC :=
HAVE_CUDA_MSG := nvcc ✗ not found (CPU backend only)
endif

# --- output: one short line per step (CC daemon/main.o); V=1 prints the full commands --
V ?= 0
ifeq ($(V),1)
Q :=
say =
else
Q := @
say = @printf '  %-6s %s\n' '$(1)' '$(2)'
endif

# --- sources ----------------------------------------------------------------------------
SHM_SRC := $(wildcard shm/*.c)
# The client library carries the engine's tokenizer (libc only) for its text API.
CLIENT_SRC := $(wildcard client-lib/*.c) kernels/model/tokenizer.c kernels/model/pretokenize.c \
	kernels/model/unicode.c kernels/model/unicode_table.c
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c daemon/sched/*.c))
KERNELS_SRC := $(wildcard kernels/*/*.c)
# ringserve-interop needs llama.cpp's headers: only `make interop` builds it.
TOOLS := $(filter-out ringserve-interop,$(notdir $(wildcard tools/ringserve-*)))
TESTS := $(basename $(notdir $(wildcard tests/*.c)))
HARNESS_SRC := $(wildcard tests/harness/*.c)

obj = $(patsubst %.c,$(O)/obj/%.o,$(patsubst %.cu,$(O)/obj/%.cu.o,$(1)))

SHM_OBJ := $(call obj,$(SHM_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
INTERNAL_OBJ := $(call obj,$(SHM_SRC) $(DAEMON_SRC) $(KERNELS_SRC) $(CUDA_SRC))

LIBRS_A := $(O)/libringserve.a
LIBRS_SO := $(O)/libringserve.so
LIBINTERNAL := $(O)/librsinternal.a
DAEMON_BIN := $(O)/ringserved
TOOL_BINS := $(addprefix $(O)/,$(TOOLS))
TEST_BINS := $(addprefix $(O)/tests/,$(TESTS))

.PHONY: all deps test test-run run bench fuzz format lint clean config-msg FORCE install vocab-refs
all: config-msg $(DAEMON_BIN) $(LIBRS_A) $(LIBRS_SO) $(O)/ringserve.pc $(TOOL_BINS) $(TEST_BINS)

config-msg:
	@echo "ringserve: $(HAVE_CUDA_MSG); build folder $(O)$(if $(SAN), (sanitizers: $(SAN)))"

deps:
	@tools/deps.sh

# The build folder remembers its flags; a change rewrites config and rebuilds.
CONFIG_LINE := $(CC) $(RS_CFLAGS) | $(RS_LDFLAGS) | $(NVCC) $(NVCCFLAGS)
$(O)/config: FORCE
	@mkdir -p $(O)
	@echo '$(CONFIG_LINE)' | cmp -s - $@ || echo '$(CONFIG_LINE)' > $@
FORCE:

$(O)/obj/%.o: %.c $(O)/config
	@mkdir -p $(dir $@)
	$(call say,CC,$@)
	$(Q)$(CC) $(RS_CFLAGS) -MMD -MP -c $< -o $@

$(O)/obj/%.cu.o: %.cu $(O)/config
	@mkdir -p $(dir $@)
	$(call say,NVCC,$@)
	$(Q)$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(LIBRS_A): $(SHM_OBJ) $(CLIENT_OBJ)
	@rm -f $@
	$(call say,AR,$@)
	$(Q)ar rcs $@ $^

# libringserve.so -> libringserve.so.0 (the soname), which is the library.
$(LIBRS_SO): $(SHM_OBJ) $(CLIENT_OBJ) client-lib/libringserve.map
	$(call say,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,libringserve.so.0 -Wl,--version-script=client-lib/libringserve.map \
		$(RS_LDFLAGS) -o $@.0 $(SHM_OBJ) $(CLIENT_OBJ) -lpthread
	$(Q)ln -sf libringserve.so.0 $@

$(O)/ringserve.pc: client-lib/ringserve.pc.in $(O)/config
	$(call say,GEN,$@)
	$(Q)sed -e 's|@LIBDIR@|$(abspath $(O))|' -e 's|@INCLUDEDIR@|$(abspath client-lib)|' $< > $@

$(LIBINTERNAL): $(INTERNAL_OBJ)
	@rm -f $@
	$(call say,AR,$@)
	$(Q)ar rcs $@ $^

LINK_ALL = $(Q)$(CC) $(RS_CFLAGS) $(RS_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBRS_A) $(LIBINTERNAL) \
	$(LDLIBS_ENGINE) $(LDLIBS_SYS)

$(DAEMON_BIN): $(call obj,daemon/main.c) $(LIBINTERNAL) $(LIBRS_A)
	$(call say,LD,$@)
	$(LINK_ALL)

# Each tools/ringserve-NAME/ folder is one program.
# Keep the objects of pattern-built programs (tests, tools) between builds.
.PRECIOUS: $(O)/obj/%.o
.SECONDEXPANSION:
$(O)/ringserve-%: $$(call obj,$$(wildcard tools/ringserve-%/*.c)) $(LIBINTERNAL) $(LIBRS_A)
	$(call say,LD,$@)
	$(LINK_ALL) $(LDLIBS_TOOL_$*)

# --- per-program link libraries: LDLIBS_TOOL_<NAME> for tools/ringserve-<NAME>/, ---------
# LDLIBS_TEST_<NAME> for tests/<NAME>.c (Debian packages in tools/deps.sh).
# ringserve-openai: HTTP (libmicrohttpd) and JSON (jansson); its test reads JSON too.
LDLIBS_TOOL_openai := -lmicrohttpd -ljansson
LDLIBS_TEST_openai_bridge := -ljansson
# make test-openai-node: the official `openai` npm package against ringserve-openai
# (optional: installs the package into .cache/ with npm; skips with a message without it).
.PHONY: test-openai-node
test-openai-node: $(O)/ringserve-openai $(DAEMON_BIN) $(O)/ringserve-mkmodel
	tests/node/run.sh $(O)

# Each tests/NAME.c is one test program; tests/sim_*.c also link the simulator's pieces.
$(O)/tests/%: $(O)/obj/tests/%.o $(call obj,$(HARNESS_SRC)) $(LIBINTERNAL) $(LIBRS_A)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(LINK_ALL) $(LDLIBS_TEST_$*)
SIM_OBJ := $(call obj,$(filter-out tools/ringserve-sim/main.c,$(wildcard tools/ringserve-sim/*.c)))
$(O)/tests/sim_%: $(O)/obj/tests/sim_%.o $(SIM_OBJ) $(call obj,$(HARNESS_SRC)) $(LIBINTERNAL) \
		$(LIBRS_A)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(LINK_ALL)
# ringserve-bench simcheck runs the simulator's pieces beside the daemon (issue 10).
$(O)/ringserve-bench: $(SIM_OBJ)

# --- tests ------------------------------------------------------------------------------
# The data-path and file-parsing tests run again under ASan+UBSan, the lock-free ones under TSan.
ASAN_TESTS := $(filter ring_% shm_% daemon_% client_% model_% engine_% sched_% sim_% openai_%,$(TESTS))
TSAN_TESTS := $(filter ring_% shm_stats daemon_many_clients daemon_model engine_thread_pool client_event_loop daemon_kill_event_loop,$(TESTS))
TEST_TIMEOUT ?= 120

test: deps
	@$(MAKE) --no-print-directory all
	@tests/run.sh $(O) $(TEST_TIMEOUT) $(TESTS)
	@$(MAKE) --no-print-directory test-python
	@$(MAKE) --no-print-directory SAN=address,undefined test-run TEST_LIST="$(ASAN_TESTS)"
	@$(MAKE) --no-print-directory SAN=thread test-run TEST_LIST="$(TSAN_TESTS)"

# Build and run a list of tests in the current configuration.
test-run:
	@$(MAKE) --no-print-directory $(DAEMON_BIN) $(LIBRS_SO) $(addprefix $(O)/tests/,$(TEST_LIST)) $(TOOL_BINS)
	@tests/run.sh $(O) $(TEST_TIMEOUT) $(TEST_LIST)

# llama.cpp's vocabulary files with reference ids (model_tokenizer_refs, client_text_bpe):
# downloaded only here and by .ci/run, never by the build or by ringserve itself.
vocab-refs:
	tools/fetch-vocab-refs.sh .cache/vocab-refs

# issue 11 (architectures): llama.cpp's prebuilt CPU libraries for the optional
# tests/interop_llamacpp_arch check (it skips without them).
.PHONY: llama-cpp
llama-cpp:
	tools/fetch-llama-cpp.sh .cache/llama-cpp

# --- make interop (issue 11, section 4): ringserve against llama.cpp ---------------------
# Not part of `make test`. A random f32 model of TinyLlama's width (4 layers, from
# ringserve-mkmodel) is quantized by llama.cpp's own llama_model_quantize to each format,
# then ringserve-interop runs llama.cpp (libllama opened at run time, declared by the
# matching llama.h) and ringserve on the same files: greedy ids and decode tokens/s at
# batch 1, rounds alternated. Skips with a message without the npm packages.
# INTEROP_ARGS passes options (--threads, --rounds, --formats, ...; ringserve-interop -h).
LLAMA_CPP_DIR ?= .cache/llama-cpp
INTEROP_WORK ?= $(O)/interop
INTEROP_MODEL := --dim 2048 --hidden 5632 --heads 32 --kv-heads 4 --vocab 32000 --layers 4 \
	--seq-len 512
INTEROP_ARGS ?=
$(call obj,$(wildcard tools/ringserve-interop/*.c)): RS_CFLAGS += -I$(LLAMA_CPP_DIR)/include
LDLIBS_TOOL_interop := -ldl
.PHONY: interop
interop:
	@tools/fetch-llama-cpp.sh $(LLAMA_CPP_DIR)
	@if [ ! -f $(LLAMA_CPP_DIR)/include/llama.h ] || ! ls $(LLAMA_CPP_DIR)/libllama*.so >/dev/null 2>&1; then \
		echo "interop: skipped: llama.cpp's libraries or llama.h are not in $(LLAMA_CPP_DIR)"; \
	else \
		$(MAKE) --no-print-directory $(O)/ringserve-interop $(O)/ringserve-mkmodel && \
		mkdir -p $(INTEROP_WORK) && \
		{ [ -f $(INTEROP_WORK)/source-f32.gguf ] || $(O)/ringserve-mkmodel $(INTEROP_MODEL) \
			--dtype f32 --out-gguf $(INTEROP_WORK)/source-f32.gguf; } && \
		$(O)/ringserve-interop $(INTEROP_WORK)/source-f32.gguf --llama-dir $(LLAMA_CPP_DIR) \
			--json $(INTEROP_WORK)/interop.json $(INTEROP_ARGS); \
	fi

run: deps all
	tools/run-demo.sh $(O) $(MODEL)

bench: deps all
	$(O)/ringserve-bench all --json $(O)/bench.json
	gnuplot -e "datafile='$(O)/serve-policies.dat'; outfile='$(O)/serve-policies.png'" tools/plot-serve.gp
	@echo "plot written to $(O)/serve-policies.png"
	@$(MAKE) --no-print-directory bench-python

# --- Python package (client-lib/python, docs/client-python.md) -----------------------------
# `make python` builds the ringserve package with its _ringserve extension, linked against
# this folder's libringserve.a, into $(O)/python/lib; test-python runs its tests with
# Debian's pytest on a real ringserved; bench-python measures the 1-token round trip from
# Python beside the C client's. Debian's interpreter on purpose: `python3` on PATH may be
# another build without python3-dev's headers or Debian's pytest.
PYTHON := /usr/bin/python3
PY_LIB := $(abspath $(O))/python/lib
.PHONY: python test-python bench-python
ifneq ($(SAN),)
python test-python bench-python:
	@echo "$@: skipped in a sanitizer build (a plain interpreter cannot load a sanitized extension)"
else
python: $(LIBRS_A)
	$(call say,PY,$(O)/python/lib/ringserve)
	$(Q)cd client-lib/python && RINGSERVE_BUILD=$(abspath $(O)) $(PYTHON) setup.py -q build \
		--build-lib $(PY_LIB) --build-temp $(abspath $(O))/python/tmp $(if $(filter 1,$(V)),,>/dev/null)
test-python: python $(DAEMON_BIN) $(TOOL_BINS)
	$(call say,PYTEST,client-lib/python/tests)
	$(Q)RS_BUILD_DIR=$(abspath $(O)) PYTHONPATH=$(PY_LIB) PYTHONDONTWRITEBYTECODE=1 timeout 600 \
		$(PYTHON) -m pytest -q -p no:cacheprovider client-lib/python/tests
bench-python: python $(DAEMON_BIN) $(TOOL_BINS)
	PYTHONPATH=$(PY_LIB) PYTHONDONTWRITEBYTECODE=1 $(PYTHON) tools/bench-python.py \
		--build $(O) --json $(O)/bench-python.json
endif

FUZZ_TARGETS := $(basename $(notdir $(wildcard tests/fuzz/*.c)))
fuzz: deps
	@$(MAKE) --no-print-directory CC=clang SAN=fuzzer-no-link,address,undefined O=build-fuzz fuzz-run

fuzz-run: $(LIBINTERNAL) $(LIBRS_A)
	@mkdir -p $(O)/fuzz
	@for t in $(FUZZ_TARGETS); do \
		$(CC) $(RS_CFLAGS) $(RS_LDFLAGS) -fsanitize=fuzzer -o $(O)/fuzz/$$t tests/fuzz/$$t.c $(LIBRS_A) $(LIBINTERNAL) \
			$(LDLIBS_ENGINE) $(LDLIBS_SYS) || exit 1; \
		echo "fuzz: $$t ($${FUZZ_SECONDS:-60} s)"; \
		$(O)/fuzz/$$t -max_total_time=$${FUZZ_SECONDS:-60} -rss_limit_mb=4096 tests/fuzz/corpus/$$t \
			> $(O)/fuzz/$$t.log 2>&1 || { tail -30 $(O)/fuzz/$$t.log; echo "fuzz: $$t FAILED"; exit 1; }; \
		tail -3 $(O)/fuzz/$$t.log; \
	done

# C only: clang-format splits CUDA's <<< >>> inside macro arguments and mangles
# __launch_bounds__ declarations, so the .cu files are formatted by hand.
format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# invalidPointerCast: model files are mapped bytes read as floats, on purpose.
lint:
	cppcheck --quiet --enable=warning,performance,portability --inline-suppr \
		--suppress=missingIncludeSystem --suppress=invalidPointerCast \
		-I. --error-exitcode=1 shm daemon client-lib kernels tools

# make install [PREFIX=/usr/local] [DESTDIR=]: the daemon, the tools, the client library
# with its header and a pkg-config file that points at the installed paths.
PREFIX ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(DAEMON_BIN) $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBRS_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBRS_SO).0 $(DESTDIR)$(PREFIX)/lib/
	ln -sf libringserve.so.0 $(DESTDIR)$(PREFIX)/lib/libringserve.so
	install -m 644 client-lib/ringserve.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@LIBDIR@|$(PREFIX)/lib|' -e 's|@INCLUDEDIR@|$(PREFIX)/include|' client-lib/ringserve.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/ringserve.pc

# --- make install: the man pages and the systemd units -------------------------------------
# docs/man/NAME.N goes to share/man/manN; each call libringserve.map exports gets a page of
# its own that sources libringserve(3) (`man rs_connect`). The units go where systemd looks
# under PREFIX (PREFIX=/usr: /usr/lib/systemd/system, /usr/lib/sysusers.d), the service
# with ExecStart in PREFIX/bin.
MAN_PAGES := $(wildcard docs/man/*.[1-8])
LIBRS_CALLS := $(shell sed -n 's/^[[:space:]]*\(rs_[a-z0-9_]*\);.*/\1/p' client-lib/libringserve.map)
MAN_DIR := $(DESTDIR)$(PREFIX)/share/man
SYSTEMD_UNIT_DIR := $(DESTDIR)$(PREFIX)/lib/systemd/system
SYSUSERS_DIR := $(DESTDIR)$(PREFIX)/lib/sysusers.d
.PHONY: install-man install-systemd
install: install-man install-systemd
install-man:
	install -d $(MAN_DIR)/man1 $(MAN_DIR)/man3 $(MAN_DIR)/man8
	for page in $(MAN_PAGES); do install -m 644 $$page $(MAN_DIR)/man$${page##*.}/ || exit 1; done
	for call in $(LIBRS_CALLS); do echo '.so man3/libringserve.3' > $(MAN_DIR)/man3/$$call.3 || exit 1; done
install-systemd:
	install -d $(SYSTEMD_UNIT_DIR) $(SYSUSERS_DIR)
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' tools/systemd/ringserved.service.in > $(SYSTEMD_UNIT_DIR)/ringserved.service
	chmod 644 $(SYSTEMD_UNIT_DIR)/ringserved.service
	install -m 644 tools/systemd/ringserved.socket $(SYSTEMD_UNIT_DIR)/
	install -m 644 tools/systemd/ringserve.sysusers $(SYSUSERS_DIR)/ringserve.conf

clean:
	rm -rf build build-*

-include $(shell find $(O)/obj -name '*.d' 2>/dev/null)
