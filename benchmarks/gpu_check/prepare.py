"""The GPU check's setup: the wheels installed offline, the pack checked against its manifest, the
environment of the children, and the models and data they train on."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import pack

REPO = Path(__file__).resolve().parents[2]
#: Packages whose versions the report records.
PACKAGES = ("torch", "transformers", "accelerate", "datasets", "pydantic", "pydantic-core", "typing-extensions",
            "tokenizers", "safetensors", "numpy", "pyarrow", "pandas", "huggingface-hub", "fsspec", "dill",
            "multiprocess", "onnx", "onnxruntime", "typer", "rich", "pyyaml", "filelock")


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a file (the error text of a failed child)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])[-2000:]


def install_wheels(wheels: Path, target: Path) -> list[str]:
    """pip-install every wheel in ``wheels`` into ``target`` (offline, no dependencies); their names."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        return []
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), *map(str, files)],
                   check=True)
    return [f.name for f in files]


def verify_pack(folder: Path) -> list[str]:
    """Files of the pack missing or different from its manifest (empty: it is intact)."""
    info = json.loads((folder / pack.MANIFEST).read_text(encoding="utf-8"))
    problems = []
    for f in info["files"]:
        path = folder / f["path"]
        if not path.is_file() or path.stat().st_size != f["bytes"] or pack.sha256(path) != f["sha256"]:
            problems.append(f["path"])
    return problems


def child_env(site: Path | None, cache: Path, smoke: bool) -> dict[str, str]:
    """The environment of every child: the installed wheels and src/ first, offline, quiet."""
    paths = ([str(site)] if site else []) + [str(REPO / "src")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "MOVPRUNE_CACHE": str(cache), "PYTHONUNBUFFERED": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    if smoke:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    else:
        env.setdefault("OMP_NUM_THREADS", "2")
    return env


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` as this process sees them (None: absent)."""
    from importlib import metadata

    importlib.invalidate_caches()
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def float32_minilm(packed: Path, to: Path) -> None:
    """The packed float16 MiniLM as a float32 model folder (training loads the weights' own dtype)."""
    from safetensors.torch import load_file, save_file

    to.mkdir(parents=True)
    weights = load_file(str(packed / "model.safetensors"))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
              str(to / "model.safetensors"), metadata={"format": "pt"})
    for f in pack.MODEL_FILES:
        shutil.copy2(packed / f, to / f)


def tiny_model(tokenizer_dir: Path, to: Path) -> None:
    """A random tiny BERT (movprune's tiny-random-bert config, seed 0) with ``tokenizer_dir``'s tokenizer."""
    import torch
    from transformers import AutoModel

    from movprune.models import tiny_bert_config

    torch.manual_seed(0)
    AutoModel.from_config(tiny_bert_config()).save_pretrained(to)
    for f in pack.MODEL_FILES:
        if f != "config.json":
            shutil.copy2(tokenizer_dir / f, to / f)


def unpack_sst2(packed: Path, to: Path) -> int:
    """The packed SST-2 files, decompressed into ``to/SST-2``; returns the training rows."""
    (to / "SST-2").mkdir(parents=True)
    for f in pack.SST2_FILES:
        with gzip.open(packed / f"{f}.gz", "rb") as src, open(to / "SST-2" / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return train_rows(to)


def train_rows(glue: Path) -> int:
    """Rows of ``glue/SST-2/train.tsv`` (its header aside)."""
    with open(glue / "SST-2" / "train.tsv", encoding="utf-8") as f:
        return sum(1 for _ in f) - 1
