"""The package's layers: every import of a movprune module points to the same layer or below.

Layers, top to bottom (docs/development.md): cli; experiments and export; training; recipe and
identity; pruners and tasks (which never import each other); results, run_folder and models; the
bottom (errors, io, schema, ...). A new module gets its layer here, so that an upward import fails
this test instead of growing a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "movprune"

LAYER = {
    # The package's front door: ``movprune/__init__.py`` hands out the library API lazily; modules
    # import it only as ``movprune`` (for ``__version__``), which the check below leaves aside.
    "__init__": 7,
    "cli": 6, "__main__": 6,
    "experiments": 5, "export": 5, "library": 5,
    "training": 4,
    "recipe": 3, "identity": 3,
    "pruners": 2, "tasks": 2,
    "results": 1, "models": 1, "run_folder": 1,
    "errors": 0, "io": 0, "schema": 0, "data": 0, "suggest": 0, "distributed": 0,
}
#: Same-layer pairs that must stay apart.
SEPARATE = {("pruners", "tasks"), ("tasks", "pruners")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".")[: -node.level] if not path.name == "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                base = ".".join([*pkg, base]) if base else ".".join(pkg)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "movprune" or m.startswith("movprune.")}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


@pytest.mark.parametrize("path, module", list(_modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_point_down(path: Path, module: str):
    unit = _unit(module)
    assert unit in LAYER, f"{module}: give its top-level unit '{unit}' a layer in tests/test_layers.py"
    upward = []
    for target in _imports(path, module):
        t_unit = _unit(target)
        if t_unit == unit or target == "movprune":
            continue
        assert t_unit in LAYER, f"{module} imports {target}: give '{t_unit}' a layer in tests/test_layers.py"
        if LAYER[t_unit] > LAYER[unit] or (unit, t_unit) in SEPARATE:
            upward.append(target)
    assert not upward, f"{module} (layer {LAYER[unit]}) imports upward: {sorted(upward)}"


#: Sub-layers inside ``experiments``: what each part may take from ``movprune.training``.
#: compare and inspect read run folders and never touch the loop; a sweep starts runs through the
#: package's public entry points (``movprune.training.run`` / ``check_inputs``) only.
TRAINING_ALLOWED = {"compare": set(), "inspect": set(), "sweep": {"movprune.training"}}


@pytest.mark.parametrize("path, module", [(p, m) for p, m in _modules() if m.startswith("movprune.experiments.")],
                         ids=lambda v: str(v) if isinstance(v, str) else "")
def test_experiments_use_only_the_loops_entry_points(path: Path, module: str):
    part = module.split(".")[2]
    assert part in TRAINING_ALLOWED, f"{module}: give '{part}' its rule in TRAINING_ALLOWED"
    allowed = TRAINING_ALLOWED[part]
    taken = {t for t in _imports(path, module) if t == "movprune.training" or t.startswith("movprune.training.")}
    # "from movprune.training import run" records both the package and movprune.training.run.
    public = {"movprune.training", "movprune.training.run", "movprune.training.check_inputs"} if allowed else set()
    assert taken <= public, f"{module} reaches into the training loop: {sorted(taken - public)}"


def _training_public_names() -> set[str]:
    """The names in ``movprune/training/__init__.py``'s ``__all__`` (read, not imported)."""
    tree = ast.parse((SRC / "training" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


@pytest.mark.parametrize("path, module", [(p, m) for p, m in _modules() if m.startswith("movprune.library")],
                         ids=lambda v: str(v) if isinstance(v, str) else "")
def test_library_uses_only_the_training_packages_public_names(path: Path, module: str):
    """The library API drives pieces of the loop from the user's code, through the names
    ``movprune.training`` exports, never through its modules."""
    public = {"movprune.training"} | {f"movprune.training.{name}" for name in _training_public_names()}
    submodules = {p.stem for p in (SRC / "training").glob("*.py")} | {p.name for p in (SRC / "training").iterdir()
                                                                       if p.is_dir()}
    assert not (public - {"movprune.training"}) & {f"movprune.training.{s}" for s in submodules}
    taken = {t for t in _imports(path, module) if t == "movprune.training" or t.startswith("movprune.training.")}
    assert taken <= public, f"{module} reaches into the training loop: {sorted(taken - public)}"
