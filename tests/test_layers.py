"""The package tree follows the data flow and imports downward only (docs/architecture.md):
a package may import its own modules and those of packages on a lower layer, never a sibling
on its layer or anything above. Parsed from the source, lazy imports inside functions included."""

import ast
from pathlib import Path

import rtlearn

LAYERS = [{"kernels"}, {"learner", "protocol"}, {"sources"}, {"service"},
          {"experiments", "benchmarks"}, {"commands"}, {"cli"}]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
ROOT = Path(rtlearn.__file__).parent


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "rtlearn" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_every_package_has_a_layer():
    pkgs = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert pkgs | {"cli"} == set(RANK), "a new package needs its place in LAYERS"


def test_imports_go_downward_only():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own not in RANK:
            continue
        for line, target in _imports(path):
            if target == own or target not in RANK:
                continue
            if RANK[target] >= RANK[own]:
                bad.append(f"{rel}:{line} imports rtlearn.{target}")
    assert not bad, "\n".join(bad)
