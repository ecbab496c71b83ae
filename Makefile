# fwd — build, run and test.  Everything a fresh Debian machine (as root) needs is installed here.
#   make run    the lab demo: namespaces, real traffic through fwd, its verdicts and table
#   make test   a short fuzz run, unit + integration tests, then the same suite on ASan/UBSan
#   make bench  NFQUEUE throughput and latency benchmarks (bench/README.md)
#   make fuzz   every fuzz target under libFuzzer for FUZZ_TIME seconds (tests/fuzz/README.md)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := gcc make python3-dev python3-venv iptables iproute2 iputils-ping \
	libnetfilter-queue-dev libnfnetlink-dev libmnl-dev conntrack tcpdump \
	clang libclang-rt-14-dev prometheus systemd sip-tester tshark
ASAN_TREE := build/asan
# The in-place builds are test builds: they carry the Engine test hooks (setup.py).
TEST_HOOKS := FWD_TEST_HOOKS=1
PYTEST_ARGS ?=

.PHONY: all deps build run test test-unit test-asan bench fuzz clean

all: build

# Debian packages: installed only when one is missing.
build/.apt-stamp: Makefile
	@mkdir -p build
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "== apt: installing $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	fi
	@touch $@

# The virtual environment: fwd editable with its test and netfilterqueue extras.  Every package
# builds in pip's isolated build environment from what it declares (a fresh machine has no
# cache to hide a missing build dependency); .ci/run starts from no venv and no cache.
$(VENV)/.deps-stamp: build/.apt-stamp pyproject.toml
	@echo "== Python: virtual environment $(VENV), fwd and its dependencies"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar off --upgrade pip setuptools wheel
	$(PY) -m pip install --progress-bar off -e '.[test,nfqueue]'
	@touch $@

deps: $(VENV)/.deps-stamp

build: deps
	$(TEST_HOOKS) $(PY) setup.py -q build_ext --inplace

run: build
	$(PY) -m fwd lab

test-unit: build
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The extension rebuilt with AddressSanitizer + UndefinedBehaviorSanitizer and the lock-order
# checker, in a copy of the tree so the normal build is untouched; the whole suite runs on it
# but the packaging tests (marked "install"), which build their own, unsanitized fwd.
test-asan: deps
	rm -rf $(ASAN_TREE) && mkdir -p $(ASAN_TREE)
	cp -r setup.py pyproject.toml README.md LICENSE MANIFEST.in Makefile docs csrc helpers fwd etc \
		systemd tests $(ASAN_TREE)/
	rm -f $(ASAN_TREE)/fwd/*.so
	cd $(ASAN_TREE) && FWD_SANITIZE=1 $(TEST_HOOKS) $(CURDIR)/$(PY) setup.py -q build_ext --inplace
	cd $(ASAN_TREE) && PYTHONPATH=$(CURDIR)/$(ASAN_TREE) \
		LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider -m "not install" $(PYTEST_ARGS) tests

test: fuzz test-unit test-asan

# Every fuzz target, tests/fuzz/fuzz_*.c and helpers/*/fuzz_*.c, under libFuzzer + ASan/UBSan,
# each linked with all C sources of the extension but the Python binding, and run for its share
# of FUZZ_TIME seconds.  Seeds: tests/fuzz/corpus/<target>/ (helpers/<name>/corpus/ for a
# helper's targets), never written; new inputs go to build/fuzz/corpus-<target>.  A target may
# add compile flags for the whole build in a line "/* fuzz-cflags: ... */" (see fuzz_sip.c).
FUZZ_TIME ?= 20
FUZZ_DIR := build/fuzz
FUZZ_TARGETS := $(sort $(wildcard tests/fuzz/fuzz_*.c helpers/*/fuzz_*.c))
FUZZ_SOURCES := $(filter-out csrc/binding%.c,$(sort $(wildcard csrc/*.c helpers/*/fwd_*.c)))
fuzz: build/.apt-stamp
	@mkdir -p $(FUZZ_DIR)
	@set -e; share=$$(( $(FUZZ_TIME) / $(words $(FUZZ_TARGETS)) )); [ $$share -ge 1 ] || share=1; \
	for src in $(FUZZ_TARGETS); do \
		target=$$(basename $$src .c); target=$${target#fuzz_}; \
		case $$src in helpers/*) seeds=$$(dirname $$src)/corpus ;; \
			*) seeds=tests/fuzz/corpus/$$target ;; esac; \
		flags=$$(sed -n 's|^/\* fuzz-cflags: \(.*\) \*/$$|\1|p' $$src); \
		echo "fuzz $$target: $$src, seeds $$seeds, $$share s $$flags"; \
		clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
			$$flags -Icsrc $(addprefix -I,$(wildcard helpers/*/)) $$src $(FUZZ_SOURCES) \
			-lmnl -lnetfilter_queue -pthread -o $(FUZZ_DIR)/fuzz_$$target; \
		mkdir -p $(FUZZ_DIR)/corpus-$$target $$seeds; \
		$(FUZZ_DIR)/fuzz_$$target -max_total_time=$$share -timeout=5 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/$$target- $(FUZZ_DIR)/corpus-$$target $$seeds; \
	done

# Benchmarks (not tests): NFQUEUE throughput and latency in namespaces; see bench/README.md.
#   make bench BENCH_ARGS=--quick    a smoke run
BENCH_ARGS ?=
LATENCY_ARGS ?=
bench: build
	$(MAKE) -C bench
	$(PY) bench/nfq_bench.py $(BENCH_ARGS)
	$(PY) bench/latency.py $(LATENCY_ARGS)

# New connections and SIP calls against the kernel's conntrack (bench/README.md), one command each.
.PHONY: bench-newconn bench-sip
bench-newconn bench-sip: build
	$(MAKE) -C bench $(@:bench-%=%) PY=$(abspath $(PY)) ARGS="$(BENCH_ARGS)"

clean:
	rm -rf build $(VENV) fwd/*.so *.egg-info

# Differential run against the kernel's conntrack (tests/differential, issue 11): the named
# scenarios and DIFF_ARGS' seeded random sequences through a kernel router namespace, through
# fwd's engine and (--daemon) through `fwd run` in a router namespace of its own; prints the
# agreement and every disagreement by cause.  Needs root.
DIFF_ARGS ?= --random 10000 --seed 1 --daemon
.PHONY: differential
differential: build
	$(PY) -m tests.differential.run $(DIFF_ARGS)
