# fwd — build, run and test.  Everything a fresh Debian machine (as root) needs is installed here.
#   make run    the lab demo: namespaces, real traffic through fwd, its verdicts and table
#   make test   unit + integration tests, then the same suite against an ASan/UBSan build

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := gcc make python3-dev python3-venv iptables iproute2 iputils-ping \
	libnetfilter-queue-dev libnfnetlink-dev libmnl-dev conntrack tcpdump
ASAN_TREE := build/asan
PYTEST_ARGS ?=

.PHONY: all deps build run test test-unit test-asan clean

all: build

# Debian packages: installed only when one is missing.
build/.apt-stamp:
	@mkdir -p build
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@touch $@

$(VENV)/.deps-stamp: build/.apt-stamp pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]' --no-build-isolation
	@touch $@

deps: $(VENV)/.deps-stamp

build: deps
	$(PY) setup.py -q build_ext --inplace

run: build
	$(PY) -m fwd lab

test-unit: build
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The extension rebuilt with AddressSanitizer + UndefinedBehaviorSanitizer and the lock-order
# checker, in a copy of the tree so the normal build is untouched; the whole suite runs on it.
test-asan: deps
	rm -rf $(ASAN_TREE) && mkdir -p $(ASAN_TREE)
	cp -r setup.py pyproject.toml README.md csrc fwd etc tests $(ASAN_TREE)/
	rm -f $(ASAN_TREE)/fwd/*.so
	cd $(ASAN_TREE) && FWD_SANITIZE=1 $(CURDIR)/$(PY) setup.py -q build_ext --inplace
	cd $(ASAN_TREE) && PYTHONPATH=$(CURDIR)/$(ASAN_TREE) \
		LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

test: test-unit test-asan

clean:
	rm -rf build $(VENV) fwd/*.so *.egg-info
