"""The paper's numbers (Sanh et al. 2020, Tables 2 and 3), shown beside ours with ``--paper``."""

from __future__ import annotations

import csv
import math
from importlib import resources
from typing import Any

#: Shown beside the paper's numbers: they come from BERT-base on the paper's tasks, not our runs.
PAPER_LABEL = "paper, BERT-base"



def paper_numbers() -> list[dict[str, Any]]:
    """The paper's Tables 2 and 3 (shipped as ``movprune/data/sanh2020_tables.csv``), one dict per
    line: table, distillation (bool), task, remaining (float), method, metric1, metric2."""
    text = resources.files("movprune.data").joinpath("sanh2020_tables.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = []
    for rec in csv.DictReader(lines):
        rows.append({"table": int(rec["table"]), "distillation": rec["distillation"] == "yes",
                     "task": rec["task"], "remaining": float(rec["remaining"]),
                     # the paper's "BERT base fine-tuning" is our dense method
                     "method": "none" if rec["method"] == "dense" else rec["method"],
                     "metric1": float(rec["metric1"]),
                     "metric2": float(rec["metric2"]) if rec["metric2"] else None})
    return rows


def paper_at(reference: list[dict[str, Any]], task: str, distilled: bool, level: float,
              metric_names: list[str]) -> dict[str, dict[str, float]]:
    """The paper's numbers for ``task`` at ``level``; metric1/metric2 are the task's first two
    metrics (SQuAD EM/F1, MNLI matched/mismatched accuracy, QQP accuracy/F1)."""
    out: dict[str, dict[str, float]] = {}
    for rec in reference:
        # The dense baseline is only in Table 2; it is the same model with or without distillation.
        same_setting = rec["distillation"] == distilled or rec["method"] == "none"
        if rec["task"] != task or not same_setting or not math.isclose(rec["remaining"], level):
            continue
        values = [rec["metric1"], rec["metric2"]]
        out[rec["method"]] = {m: v for m, v in zip(metric_names, values) if v is not None}
    return out


def paper_tasks() -> list[str]:
    """Tasks the paper reports."""
    return sorted({r["task"] for r in paper_numbers()})
