"""The project's seams: no import circle among fwd's modules, and the declared shapes the Python
and C sides share agree."""

import ast
from pathlib import Path

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
