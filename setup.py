"""Builds the one C extension, fwd._core, from csrc/ and every helper's C files (helpers/*/).

FWD_SANITIZE=1 builds it with AddressSanitizer + UndefinedBehaviorSanitizer and the debug
lock-order checker (FWD_DEBUG)."""

import os
from glob import glob

from setuptools import Extension, setup

cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-O2"]
ldflags = ["-pthread"]
if os.environ.get("FWD_SANITIZE") == "1":
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-fno-omit-frame-pointer", "-g", "-O1", "-DFWD_DEBUG"]
    cflags += san
    ldflags += san

setup(
    ext_modules=[
        Extension(
            "fwd._core",
            sources=sorted(glob("csrc/*.c")) + sorted(glob("helpers/*/fwd_*.c")),
            include_dirs=["csrc", *sorted(glob("helpers/*/"))],
            libraries=["mnl", "netfilter_queue"],
            depends=sorted(glob("csrc/*.h")) + sorted(glob("helpers/*/*.h")),
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
