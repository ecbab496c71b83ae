"""The project's seams: no import circle among fwd's modules, and the declared shapes the Python
and C sides share agree."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

from fwd import _core, config, engine, gateway, helper_config

ROOT = Path(__file__).resolve().parent.parent


def _fwd_imports(path: Path) -> set[str]:
    """Modules of the fwd package that `path` imports (at any level, lazy imports included)."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "fwd":
            deps |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fwd."):
            deps.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fwd.")}
    return deps


def test_no_import_circle_in_fwd():
    graph = {p.stem: _fwd_imports(p) for p in (ROOT / "fwd").glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for dep in graph.get(start, ()):
            if dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert circles == []
    assert "helper_config" in graph["engine"] and "config" in graph["helper_config"]


# --- the policy's declared shape: fwd/engine.py <-> csrc/binding_policy.c ----------------------

def test_rule_and_helper_fields_agree_with_the_engine():
    assert sorted(engine.Rule._fields) == sorted(_core.RULE_FIELDS)
    assert sorted(engine.HelperSpec._fields) == sorted(_core.HELPER_FIELDS)


def test_every_helper_declares_the_same_classes_and_knobs_on_both_sides():
    c_side = _core.helper_types()
    assert sorted(c_side) == helper_config.available()
    for name, declared in c_side.items():
        module = helper_config.load(name)
        assert sorted(declared["classes"]) == sorted(module.CLASSES), name
        assert sorted(declared["knobs"]) == sorted(module.KNOBS), name


def sip(**change):
    spec = engine.compile_helper(helper_config.parse("sip", {}))
    return spec._replace(**{k: {**getattr(spec, k), **v} for k, v in change.items()})


def test_rule_fields_are_read_by_name():
    e = _core.Engine()
    e.set_policy([engine.Rule(proto=17, dport_lo=53, dport_hi=53, verdict=1)], 0)
    with pytest.raises(ValueError, match="rule 0: .tuple. object has no attribute .state_mask."):
        e.set_policy([(0,) * 15], 0)  # a positional tuple names nothing
    with pytest.raises(ValueError, match="rule 0: dport_hi 70000 out of range"):
        e.set_policy([engine.Rule(dport_hi=70000)], 0)


@pytest.mark.parametrize("spec,message", [
    (lambda: sip(), None),
    (lambda: sip()._replace(classes={}), "helper sip: no class signalling"),
    (lambda: sip(classes={"fax": (1, 1.0)}), "helper sip: unknown class"),
    (lambda: sip(knobs={"colour": 1}), "helper sip: unknown knob"),
    (lambda: sip()._replace(knobs={}), "helper sip: no knob sip_timeout"),
    (lambda: sip()._replace(type="h999"), "no helper type 'h999'"),
])
def test_helper_classes_and_knobs_are_read_by_name(spec, message):
    e = _core.Engine()
    if message is None:
        e.set_policy([], 0, helpers=[spec()])
        assert [h["name"] for h in e.stats()["helpers"]] == ["sip"]
    else:
        with pytest.raises(ValueError, match=message):
            e.set_policy([], 0, helpers=[spec()])


# --- the one gateway policy (fwd/gateway.toml) -------------------------------------------------

def test_gateway_policy_variants_load():
    both = config.parse(tomllib.loads(gateway.policy("stateful", "from-client")))
    assert [(r.name, r.iif, r.src) for r in both.policy.rules] == [
        ("stateful", None, None), ("from-client", "fwin", None)]
    by_src = config.parse(tomllib.loads(gateway.policy("from-client", "stateful",
                                                       client_src="10.0.1.0/24")))
    assert [(r.name, r.iif, str(r.src)) for r in by_src.policy.rules] == [
        ("stateful", None, "None"), ("from-client", None, "10.0.1.0/24")]
    sip = config.parse(tomllib.loads(gateway.policy("stateful", "sip-udp", "sip-tcp")))
    assert [(r.name, r.proto, r.dport) for r in sip.policy.rules[1:]] == [
        ("sip-udp", 17, (5060, 5060)), ("sip-tcp", 6, (5060, 5060))]
    assert sip.policy.default == "drop"
    with pytest.raises(KeyError, match="no rule"):
        gateway.policy("stateful", "ssh")


def test_architecture_file_map_names_every_source_file():
    text = (ROOT / "docs/architecture.md").read_text()
    files = [*(ROOT / "csrc").glob("*.[ch]"), *(ROOT / "fwd").glob("*.py")]
    missing = sorted(p.name for p in files if not p.name.startswith("__")
                     and p.name not in text and f"{p.stem}.[ch]" not in text)
    assert missing == []


def test_helpers_see_only_the_helper_api():
    """A helper's C includes, of the core's headers, fwd_helper_api.h alone (it brings the packet
    types): no engine, table or expectation internals.  (Its fuzz targets are harnesses: they may
    drive the whole engine.)"""
    core = {p.name for p in (ROOT / "csrc").glob("*.h")}
    allowed = {"fwd_helper_api.h", "fwd_packet.h"}
    seen = {}
    for src in [*(ROOT / "helpers").glob("*/*.[ch]"), *(ROOT / "tests/helper_tiny").glob("*.[ch]")]:
        if src.name.startswith("fuzz_"):
            continue
        included = set(re.findall(r'^#include "([^"]+)"', src.read_text(), re.M))
        seen[str(src.relative_to(ROOT))] = sorted((included & core) - allowed)
    assert seen and all(v == [] for v in seen.values()), seen
