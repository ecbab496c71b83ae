"""Builds the one C extension, fwd._core, from every file in csrc/.

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
            sources=sorted(glob("csrc/*.c")),
            libraries=["mnl", "netfilter_queue"],
            depends=sorted(glob("csrc/*.h")),
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
