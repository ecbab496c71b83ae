"""The SIP parser's C unit tests (tests/c/test_sip_parse.c), built with ASan/UBSan and run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "tests/c/test_sip_parse.c", ROOT / "helpers/sip/fwd_sip_parse.c"]
EXPECTED_CASES = 30


def test_sip_parser_unit_tests(tmp_path):
    # The binary brings its own sanitizer runtime: an inherited preload (make test-asan) is not
    # for it, nor for the compiler.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    exe = tmp_path / "test_sip_parse"
    build = subprocess.run(
        ["gcc", "-std=gnu11", "-g", "-O1", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-Wall", "-Wextra", "-Werror",
         "-I", str(ROOT / "helpers/sip"), "-I", str(ROOT / "csrc"),
         *map(str, SOURCES), "-o", str(exe)],
        env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    summary = re.search(r"^(\d+) passed, (\d+) failed$", run.stdout, re.M)
    assert summary, out
    passed, failed = map(int, summary.groups())
    assert failed == 0, out
    assert passed >= EXPECTED_CASES, out
