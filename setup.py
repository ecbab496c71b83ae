"""Builds the one C extension, fwd._core, from csrc/ and every helper's C files (helpers/*/),
and ships the example configuration and the systemd unit inside the package (fwd/data/).
It packages fwd with every helper folder's Python side as fwd.helpers.<name>: a helper is found
by its folder alone (helpers/<name>/__init__.py), never from a list.

Normal builds carry the usual hardening: _FORTIFY_SOURCE, a stack protector, full RELRO.
FWD_SANITIZE=1 builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer and the
debug lock-order checker (FWD_DEBUG) instead.  FWD_TEST_HOOKS=1 adds the test-only units
(the Makefile's test builds set it; a plain `pip install .` or wheel leaves them out)."""

import os
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# What fwd ships besides its code, found at run time by fwd.assets.
DATA_DIRS = ("etc", "systemd")

cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
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
else:
    cflags += ["-O2", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong",
               "-fPIC"]
    ldflags += ["-Wl,-z,relro,-z,now"]


class BuildPyWithData(build_py):
    """build_py that also copies etc/ and systemd/ to fwd/data/ in the built package."""

    def run(self) -> None:
        super().run()
        for name in DATA_DIRS:
            self.copy_tree(name, os.path.join(self.build_lib, "fwd", "data", name))


setup(
    cmdclass={"build_py": BuildPyWithData},
    # helpers/ installs as fwd.helpers (never as a bare top-level "helpers" package).
    packages=["fwd", "fwd.helpers",
              *(f"fwd.helpers.{os.path.basename(os.path.dirname(p))}"
                for p in sorted(glob("helpers/*/__init__.py")))],
    package_dir={"fwd.helpers": "helpers"},
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
