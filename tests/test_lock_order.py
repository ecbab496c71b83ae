"""The lock order (shard locks ascending -> helper stripe -> expectation lock) is asserted in
debug builds: a program taking locks out of order aborts with a message naming both."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    exe = tmp_path_factory.mktemp("lock_order") / "lock_order"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    build = subprocess.run(
        ["gcc", "-std=gnu11", "-g", "-DFWD_DEBUG", "-Wall", "-Wextra", "-Werror",
         "-I", str(ROOT / "csrc"), str(ROOT / "tests/c/lock_order.c"),
         str(ROOT / "csrc/fwd_lock.c"), "-pthread", "-o", str(exe)],
        env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe, env


def run(program, what):
    exe, env = program
    return subprocess.run([str(exe), what], env=env, capture_output=True, text=True, timeout=30)


def test_documented_order_is_allowed(program):
    done = run(program, "ok")
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr


@pytest.mark.parametrize("what,message", [
    ("reverse", "lock order violation: shard[1] taken while holding shard[5]"),
    ("expect", "lock order violation: shard[0] taken while holding expect[0]"),
])
def test_out_of_order_aborts(program, what, message):
    done = run(program, what)
    assert done.returncode == -signal.SIGABRT
    assert message in done.stderr and "done" not in done.stdout
