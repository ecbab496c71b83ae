"""A new helper needs no edit outside its folder: tests/helper_tiny/ (a one-line protocol) is
dropped into a copy of the tree as helpers/tiny/ and nothing else changes.  The same discovery
as SIP's then builds its C into the extension, packages its Python side as fwd.helpers.tiny,
loads etc/helpers.d-style config for it by name, runs it on packets, and fuzzes its parser."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fwd import gateway

ROOT = Path(__file__).resolve().parent.parent
COPY = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "Makefile", "csrc",
        "helpers", "fwd", "etc", "systemd", "tests")
IGNORE = shutil.ignore_patterns("*.so", "__pycache__", "build", ".pytest_cache")

# The gateway's "stateful" rule (fwd/gateway.toml), and new "tiny" signalling accepted.
CONFIG = gateway.policy("stateful") + (
    '[[policy.rule]]\nname = "tiny"\nct_state = ["new"]\nproto = "udp"\ndport = 7777\n'
    'verdict = "accept"\n')

# Run in the copy: the helper through config, engine and packets; prints what it saw.
PROBE = r"""
import json, sys
from scapy.all import IP, UDP, raw
from fwd import _core, config, engine, helper_config

def udp(src, dst, sport, dport, payload=b"x"):
    return (raw(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload), 0, 0)

cfg = config.load(sys.argv[1])
eng = engine.create_engine(cfg)
engine.configure(eng, cfg)
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
results = eng.process([udp(A, B, 5000, 7777, b"OPEN 4000\r\n"), udp(B, A, 6000, 4000),
                       udp(C, A, 6001, 4000), udp(A, B, 5000, 7777, b"OPEN x\n")], 1.0)
print(json.dumps({
    "types": _core.helper_types(), "available": helper_config.available(),
    "module": helper_config.load("tiny").__name__,
    "results": [(_core.VERDICT_NAMES[r[0]], _core.STATE_NAMES[r[2]]) for r in results],
    "stats": eng.stats()["helpers"],
}))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the source tree with tests/helper_tiny/ as helpers/tiny/, built."""
    tree = tmp_path_factory.mktemp("tree")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=IGNORE)
        else:
            shutil.copy2(src, tree / name)
    shutil.copytree(ROOT / "tests/helper_tiny", tree / "helpers/tiny")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                   check=True, capture_output=True)
    return tree


def test_new_helper_is_built_configured_and_run(tree):
    (tree / "cfg/helpers.d").mkdir(parents=True)
    (tree / "cfg/fwd.toml").write_text(CONFIG)
    (tree / "cfg/helpers.d/tiny.toml").write_text("ports = [7777]\n")
    out = subprocess.run([sys.executable, "-c", PROBE, str(tree / "cfg/fwd.toml")], cwd=tree,
                         env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                         capture_output=True, text=True).stdout
    seen = json.loads(out)
    assert seen["types"]["tiny"] == {"classes": ["data"], "knobs": ["direct"]}
    assert sorted(seen["types"]) == seen["available"]
    assert {"sip", "tiny"} <= set(seen["available"])
    assert seen["module"] == "fwd.helpers.tiny"
    # OPEN 4000 opens a pinhole from B only (direct); a line it cannot read gets on_error drop
    # (still "new": the signalling flow has had no reply).
    assert seen["results"] == [["accept", "new"], ["accept", "related"], ["drop", "new"],
                               ["drop", "new"]]
    (tiny,) = seen["stats"]
    assert (tiny["name"], tiny["messages"], tiny["exp_created"], tiny["parse_errors"]) == (
        "tiny", 1, 1, 1)


def test_new_helper_is_packaged(tree, tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                   cwd=tree, check=True, capture_output=True)
    assert (tmp_path / "fwd/helpers/tiny/__init__.py").is_file()
    assert (tmp_path / "fwd/helpers/sip/__init__.py").is_file()


def test_new_helper_is_fuzzed(tree):
    (tree / "build").mkdir(exist_ok=True)
    (tree / "build/.apt-stamp").touch()  # the Debian packages are there (no apt in a test)
    # Without the sanitizer build's preloaded gcc ASan runtime: libFuzzer brings clang's.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    r = subprocess.run(["make", "fuzz", "FUZZ_TIME=2"], cwd=tree, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fuzz tiny: helpers/tiny/fuzz_tiny.c, seeds helpers/tiny/corpus" in r.stdout
    assert "fuzz sip: tests/fuzz/fuzz_sip.c, seeds tests/fuzz/corpus/sip" in r.stdout
    assert "fuzz engine: tests/fuzz/fuzz_engine.c, seeds tests/fuzz/corpus/engine" in r.stdout
    # every target found ran to its end (the tree's own helpers may bring more targets)
    targets = re.findall(r"^fuzz (\S+): ", r.stdout, re.M)
    assert {"tiny", "sip", "engine"} <= set(targets) and r.stderr.count("Done ") == len(targets)
