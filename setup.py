"""Builds the one C extension, fwd._core, from csrc/ and every helper's C files (helpers/*/).

FWD_SANITIZE=1 builds it with AddressSanitizer + UndefinedBehaviorSanitizer and the debug
lock-order checker (FWD_DEBUG).  FWD_TEST_HOOKS=1 adds the test-only units (the Makefile's test
builds set it; a plain `pip install .` or wheel leaves them out)."""

import os
from glob import glob

from setuptools import Extension, setup

cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-O2"]
ldflags = ["-pthread"]
# Exercisers reached only through Engine test methods; the production extension has neither.
test_sources = ["csrc/binding_test.c", "csrc/fwd_stress.c"]
sources = [f for f in sorted(glob("csrc/*.c")) if f not in test_sources]
test_hooks = os.environ.get("FWD_TEST_HOOKS") == "1"
if test_hooks:
    sources += test_sources
    cflags.append("-DFWD_TEST_HOOKS")
# A dependency that changes when the flag does, so switching it rebuilds an up-to-date extension.
flag_file = "build/test-hooks.flag"
os.makedirs("build", exist_ok=True)
if not os.path.exists(flag_file) or open(flag_file).read() != str(int(test_hooks)):
    with open(flag_file, "w") as f:
        f.write(str(int(test_hooks)))
if os.environ.get("FWD_SANITIZE") == "1":
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-fno-omit-frame-pointer", "-g", "-O1", "-DFWD_DEBUG"]
    cflags += san
    ldflags += san

setup(
    ext_modules=[
        Extension(
            "fwd._core",
            sources=sources + sorted(glob("helpers/*/fwd_*.c")),
            include_dirs=["csrc", *sorted(glob("helpers/*/"))],
            libraries=["mnl", "netfilter_queue"],
            depends=sorted(glob("csrc/*.h")) + sorted(glob("helpers/*/*.h")) + [flag_file],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
