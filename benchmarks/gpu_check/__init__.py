"""A prepared check of movprune on a GPU machine that has no network and lacks some packages.

``pack`` (here, on CPU) fills ``.gpu/`` with what that machine lacks: wheels, a half-precision copy
of MiniLM, the SST-2 files and a manifest. ``run`` (there, from the repository root) installs the
wheels into a temporary folder and writes one JSON report of recipes, resume, exports, training
speed and MiniLM on SST-2 (:mod:`benchmarks.gpu_check.schema`). ``--smoke`` runs both on CPU with
tiny models and data, so that the suite keeps the check working between GPU windows.

    python3 -m benchmarks.gpu_check pack --to .gpu
    python3 -m benchmarks.gpu_check run --out DIR [--smoke]
"""
