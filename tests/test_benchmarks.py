"""The benchmark scripts run as ``python benchmarks/X.py``, which puts ``benchmarks/`` first on
``sys.path``: a script named like an installed package (``multiprocess.py`` did) hides that package
from every library the benchmarks import."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_script_shadows_an_installed_module():
    # Scripts and packages alike (benchmarks/gpu_check/ is importable as gpu_check from a script).
    names = [p for p in BENCHMARKS.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()]
    shadowing = [p.name for p in names if importlib.util.find_spec(p.stem) is not None]
    assert not shadowing, f"rename these benchmark scripts, they hide installed modules: {shadowing}"
