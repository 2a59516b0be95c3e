"""Whether a run may resume from its checkpoints: each checkpoint's files complete (the sizes in
its ``files.json``), the newest usable one (older ones that ``keep_checkpoints`` kept are the
fallback), and the data files unchanged since it was written (their SHA-256 in its trainer state).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from movprune.errors import DataError, RunFailedError
from movprune.training.checkpoint import CHECKPOINTS_DIR, MANIFEST, TRAINER_STATE, checkpoints


def problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (a file missing or cut short, a state that does not
    parse), or None when it can."""
    manifest = checkpoint / MANIFEST
    try:
        sizes = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
        for name, size in sizes.items():
            path = checkpoint / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} is cut short ({path.stat().st_size} of {size} bytes)"
        json.loads((checkpoint / f"{TRAINER_STATE}.json").read_text(encoding="utf-8"))
        load_file(str(checkpoint / f"{TRAINER_STATE}.safetensors"))
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def newest_usable(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint of ``run_dir`` that can be resumed from, and one line for each newer
    one passed over. Raises :class:`RunFailedError` when there are checkpoints and none is usable."""
    skipped: list[str] = []
    found = checkpoints(run_dir)
    for _, folder in reversed(found):
        why = problem(folder)
        if why is None:
            return folder, skipped
        skipped.append(f"{folder}: {why}")
    if found:
        raise RunFailedError(f"no usable checkpoint in {Path(run_dir) / CHECKPOINTS_DIR} ({'; '.join(skipped)}); "
                             "run without --resume to start over")
    return None, skipped


def check_same_data(checkpoint: Path, digests: dict[str, str]) -> None:
    """Raise :class:`DataError` when a data file the run was reading when ``checkpoint`` was
    written now has other content (``digests``: path -> SHA-256 now)."""
    saved = json.loads((checkpoint / f"{TRAINER_STATE}.json").read_text(encoding="utf-8")).get("data_sha256") or {}
    for path, digest in saved.items():
        now = digests.get(path)
        if now != digest and digest not in digests.values():  # the same content at another path is the same data
            change = ("is gone or no longer read" if now is None
                      else f"changed (SHA-256 {digest[:12]}… then, {now[:12]}… now)")
            raise DataError(f"cannot resume: {path} {change} since {checkpoint} was written; the run would "
                            "train on two datasets: restore the file to resume, or start over with --force")
