"""`movprune compare`: Table 2 and Figure 2 of the paper from run folders."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import SHARED_DATA, run_cli, tiny_recipe_dict

PAPER_CSV = SHARED_DATA.parent / "reference" / "sanh2020_tables.csv"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A real sweep on SST-2: magnitude and movement at 10% remaining, seeds 1 and 2 (a tiny learning
    rate keeps the two seeds' random initialisations, so their accuracies differ)."""
    import yaml

    from movprune.experiments.sweep import plan_sweep, run_sweep

    tmp = tmp_path_factory.mktemp("compare")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp / "results")))
    plan = plan_sweep(recipe, remaining_pcts=[10], methods=["magnitude", "movement"], seeds=[1, 2],
                      overrides=["train.max_steps=4", "train.batch_size=8", "train.lr=1e-6",
                                 "train.max_train_samples=64", "train.max_eval_samples=48"])
    outcomes = run_sweep(plan)
    assert [o.status for o in outcomes] == ["finished"] * 4
    return tmp / "results" / "tiny-sst2"


def expected_cells(folder: Path) -> dict[tuple[str, float, str], dict]:
    """(pruner, target remaining %, metric) -> mean, sample std, seeds: computed from result.json."""
    values: dict[tuple[str, float, str], list[tuple[int, float]]] = {}
    for path in folder.rglob("result.json"):
        r = json.loads(path.read_text())
        for metric, value in r["metrics"].items():
            values.setdefault((r["pruner"], float(r["target_remaining_pct"]), metric), []).append((r["seed"], value))
    return {key: {"mean": sum(v for _, v in pairs) / len(pairs),
                  "std": statistics.stdev([v for _, v in pairs]) if len(pairs) > 1 else None,
                  "seeds": sorted(s for s, _ in pairs)}
            for key, pairs in values.items()}


def test_csv_and_json_cells_are_the_mean_and_std_of_the_runs(sweep_dir):
    expected = expected_cells(sweep_dir)
    assert len(expected) == 2  # (magnitude, 10, accuracy) and (movement, 10, accuracy)

    res = run_cli("compare", str(sweep_dir), "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == len(expected)
    for row in rows:
        want = expected[(row["pruner"], float(row["remaining_pct"]), row["metric"])]
        assert (row["task"], row["model"], row["distill_teacher"], row["source"]) == \
            ("sst2", "tiny-random-bert", "", "ours")
        assert float(row["sparsity_pct"]) == 90
        assert float(row["mean"]) == pytest.approx(want["mean"], abs=1e-9)
        assert float(row["std"]) == pytest.approx(want["std"], abs=1e-9)
        assert row["n"] == "2" and row["seeds"] == "1 2"

    res = run_cli("compare", str(sweep_dir), "--format", "json")
    assert res.returncode == 0, res.stderr
    (table,) = json.loads(res.stdout)
    assert (table["task"], table["metric_names"], table["pruners"]) == ("sst2", ["accuracy"],
                                                                       ["magnitude", "movement"])
    (row,) = table["rows"]
    assert row["remaining_pct"] == 10 and row["label"] == "10% remaining (90% sparse)"
    for pruner, cell in row["cells"].items():
        want = expected[(pruner, 10.0, "accuracy")]
        got = cell["metrics"]["accuracy"]
        assert got["mean"] == pytest.approx(want["mean"], abs=1e-9)
        assert got["std"] == pytest.approx(want["std"], abs=1e-9)
        assert got["n"] == 2 and cell["seeds"] == want["seeds"]
        assert cell["measured_remaining_pct"] == pytest.approx(10, abs=0.1)
        assert len(cell["run_dirs"]) == 2
    # The higher mean is bold; a tie marks none (the rule itself is tested on hand-made runs below).
    means = {p: c["metrics"]["accuracy"]["mean"] for p, c in row["cells"].items()}
    expected_best = [] if len(set(means.values())) == 1 else [max(means, key=means.get)]
    assert [p for p, c in row["cells"].items() if c["best"]] == expected_best

    res = run_cli("compare", str(sweep_dir))
    assert res.returncode == 0, res.stderr
    assert "10% remaining (90% sparse)" in res.stdout and "mean ± std over seeds (n = 2)" in res.stdout


def test_plot_is_a_png_matplotlib_reads(sweep_dir, tmp_path):
    import matplotlib.image

    out = tmp_path / "figure" / "fig2.png"
    res = run_cli("compare", str(sweep_dir), "--plot", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_unfinished_and_corrupt_runs_are_skipped_with_a_warning(sweep_dir, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    (copy / "magnitude-r10-s1" / "result.json").unlink()  # as if interrupted
    (copy / "movement-r10-s2" / "result.json").write_text('{"task": "sst2"')  # cut short
    res = run_cli("compare", str(copy), "--format", "json")
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any("magnitude-r10-s1" in w and "unfinished" in w for w in warnings)
    assert any("movement-r10-s2" in w and "unreadable" in w for w in warnings)
    (table,) = json.loads(res.stdout)
    cells = table["rows"][0]["cells"]
    assert cells["magnitude"]["seeds"] == [2] and cells["movement"]["seeds"] == [1]
    assert cells["magnitude"]["metrics"]["accuracy"]["std"] is None

    res = run_cli("compare", str(tmp_path / "missing"))
    assert res.returncode == 2 and "no finished runs" in res.stderr


# ------------------------------------------------------------------------------------------------
# Hand-made result files: grouping, ordering, bold, the paper's numbers


def write_run(root: Path, name: str, task: str, pruner: str, level: float, seed: int,
              metrics: dict[str, float], teacher: str | None = None, model: str = "minilm-l6") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "name": name, "task": task, "model": model, "pruner": pruner, "target_remaining_pct": level,
        "remaining_pct": level, "metrics": metrics, "metric_names": list(metrics), "seed": seed,
        "steps": 10, "train_seconds": 1.0, "versions": {},
        "distill": None if teacher is None else {"teacher": teacher, "alpha_ce": 0.5}}))


@pytest.fixture
def handmade(tmp_path) -> Path:
    root = tmp_path / "runs"
    mnli = {  # (pruner, level): [(accuracy, accuracy_mm) per seed]
        ("none", 100): [(84.0, 84.5), (84.4, 84.9)],
        ("magnitude", 10): [(70.0, 71.0), (72.0, 73.0)],
        ("movement", 10): [(75.0, 76.0), (76.0, 77.0)],
        ("magnitude", 3): [(60.0, 61.0), (61.0, 62.0)],
        ("movement", 3): [(74.0, 75.0), (73.0, 74.0)],
    }
    for (pruner, level), seeds in mnli.items():
        for seed, (acc, acc_mm) in enumerate(seeds, start=1):
            write_run(root / "mnli", f"{pruner}-r{level}-s{seed}", "mnli", pruner, level, seed,
                      {"accuracy": acc, "accuracy_mm": acc_mm})
    write_run(root / "mnli-distilled", "movement-r10-s1", "mnli", "movement", 10, 1,
              {"accuracy": 77.0, "accuracy_mm": 78.0}, teacher="results/teacher/model")
    write_run(root / "sst2", "magnitude-r10-s1", "sst2", "magnitude", 10, 1, {"accuracy": 80.0})
    return root


def test_tables_group_by_task_model_and_distillation_with_the_best_per_row_in_bold(handmade):
    from movprune.experiments.compare import Column, build_comparisons, scan_runs, to_latex, to_markdown

    scan = scan_runs([handmade])
    assert scan.warnings == [] and len(scan.results) == 12
    comps = build_comparisons(scan.results)
    assert [(c.task, c.distill_teacher) for c in comps] == [("mnli", None), ("mnli", "results/teacher/model"),
                                                            ("sst2", None)]
    mnli = comps[0]
    assert mnli.metric_names == ["accuracy", "accuracy_mm"]
    assert mnli.columns == [Column("none"), Column("magnitude"), Column("movement")]
    assert [r.remaining_pct for r in mnli.rows] == [100, 10, 3]
    assert [r.label for r in mnli.rows] == ["100% (dense)", "10% remaining (90% sparse)",
                                            "3% remaining (97% sparse)"]
    ten = mnli.rows[1].cells
    assert ten[Column("magnitude")].metrics["accuracy"].mean == 71.0
    assert ten[Column("magnitude")].metrics["accuracy"].std == pytest.approx(2 ** 0.5)
    assert ten[Column("movement")].metrics["accuracy_mm"].mean == 76.5
    assert [p for p, c in ten.items() if c.best] == [Column("movement")]
    assert not mnli.rows[0].cells[Column("none")].best  # alone in its row

    markdown = to_markdown(comps)
    assert "| remaining weights | dense (none) | magnitude | movement |" in markdown
    assert "| 3% remaining (97% sparse) | – | 60.5±0.7 / 61.5±0.7 | **73.5±0.7 / 74.5±0.7** |" in markdown
    assert "distilled from results/teacher/model" in markdown
    latex = to_latex(comps)
    assert (r"3\% remaining (97\% sparse) & -- & 60.5$\pm$0.7 / 61.5$\pm$0.7 & "
            r"\textbf{73.5$\pm$0.7 / 74.5$\pm$0.7} \\") in latex


def paper_rows(task: str, distillation: str) -> dict[tuple[str, float], tuple[float, float]]:
    """The reference CSV beside the repository, read independently of movprune."""
    lines = [line for line in PAPER_CSV.read_text().splitlines() if line and not line.startswith("#")]
    return {(r["method"], float(r["remaining"])): (float(r["metric1"]), float(r["metric2"]))
            for r in csv.DictReader(lines) if r["task"] == task and r["distillation"] == distillation}


def test_paper_numbers_sit_beside_ours_where_task_and_level_match(handmade, tmp_path):
    from importlib import resources

    shipped = resources.files("movprune.data").joinpath("sanh2020_tables.csv").read_bytes()
    assert shipped == PAPER_CSV.read_bytes()

    res = run_cli("compare", str(handmade), "--paper", "--format", "json")
    assert res.returncode == 0, res.stderr
    plain, distilled, sst2 = json.loads(res.stdout)
    table2, table3 = paper_rows("mnli", "no"), paper_rows("mnli", "yes")
    for row in plain["rows"]:
        level = row["remaining_pct"]
        for pruner in row["cells"]:
            key = ("dense" if pruner == "none" else pruner, level)
            assert row["paper"][pruner] == dict(zip(["accuracy", "accuracy_mm"], table2[key]))
    (row,) = distilled["rows"]
    assert row["paper"]["movement"] == dict(zip(["accuracy", "accuracy_mm"], table3[("movement", 10.0)]))
    assert sst2["rows"][0]["paper"] == {}
    assert "the paper has no numbers for sst2" in res.stderr

    res = run_cli("compare", str(handmade / "mnli"), "--paper", "--format", "markdown")
    assert "| magnitude (paper, BERT-base) |" in res.stdout
    m10, m3 = table2[("magnitude", 10.0)], table2[("magnitude", 3.0)]
    assert f"| 71.0±1.4 / 72.0±1.4 | {m10[0]:.1f}/{m10[1]:.1f} |" in res.stdout
    assert f"| 60.5±0.7 / 61.5±0.7 | {m3[0]:.1f}/{m3[1]:.1f} |" in res.stdout

    res = run_cli("compare", str(handmade / "mnli"), "--paper", "--format", "csv")
    paper_lines = [r for r in csv.DictReader(io.StringIO(res.stdout)) if r["source"] != "ours"]
    assert len(paper_lines) == 5 * 2  # five (pruner, level) cells, two metrics each

    import matplotlib.image

    plain_png, paper_png = tmp_path / "plain.png", tmp_path / "paper.png"
    assert run_cli("compare", str(handmade / "mnli"), "--plot", str(plain_png)).returncode == 0
    assert run_cli("compare", str(handmade / "mnli"), "--paper", "--plot", str(paper_png)).returncode == 0
    # With the paper's lines the legend moves beside the axes, so the figure is wider.
    plain_h, plain_w = matplotlib.image.imread(plain_png).shape[:2]
    paper_h, paper_w = matplotlib.image.imread(paper_png).shape[:2]
    assert plain_h == paper_h and paper_w > plain_w


def test_runs_trained_or_evaluated_differently_are_flagged(handmade):
    """The paper gives every method the same budget and data; a table mixing budgets or evaluation
    sets says so, naming the setting, its values and the odd runs out."""
    from movprune.experiments.compare import build_comparisons, scan_runs

    base = {"task": "mnli", "data_dir": "glue", "train": {"batch_size": 32, "lr": 1e-4, "max_eval_samples": None},
            "pruner": {"method": "movement", "initial_warmup": 0.1, "final_warmup": 0.2}}
    mnli = handmade / "mnli"
    for folder in sorted(mnli.iterdir()):
        (folder / "recipe.yaml").write_text(yaml.safe_dump(base))
    assert build_comparisons(scan_runs([mnli]).results)[0].warnings == []

    odd = mnli / "movement-r3-s2"
    (odd / "recipe.yaml").write_text(yaml.safe_dump({**base, "train": {**base["train"], "max_eval_samples": 300}}))
    dense = mnli / "none-r100-s1"  # a dense run has no schedule: its warm-ups do not count
    (dense / "recipe.yaml").write_text(yaml.safe_dump({**base, "pruner": {"method": "none", "initial_warmup": 0.5}}))
    *splits, warning = build_comparisons(scan_runs([mnli]).results)[0].warnings
    assert "train.max_eval_samples differs (null: 9 runs; 300: " in warning and str(odd) in warning
    # ... and no cell averages runs that differ in more than the seed (the dense pair differs in a
    # warm-up without effect, and is split all the same: cells group by every recipe key)
    assert sorted(w.split(":")[0] for w in splits) == ["mnli/movement at 3% remaining (97% sparse)",
                                                       "mnli/none at 100% (dense)"]
    assert "the runs differ in train.max_eval_samples, so they are shown as separate columns" in "".join(splits)

    res = run_cli("compare", str(mnli), "--format", "markdown")
    assert res.returncode == 0 and "train.max_eval_samples differs" in res.stderr
    assert "mnli · minilm-l6 · no distillation: runs differ in settings" in res.stderr

    (dense / "recipe.yaml").write_text(yaml.safe_dump(base))
    # Leaving the sequence length to the task is the same as writing the task's default out.
    (odd / "recipe.yaml").write_text(yaml.safe_dump({**base, "train": {**base["train"], "max_seq_length": 128}}))
    assert build_comparisons(scan_runs([mnli]).results)[0].warnings == []
    # A run whose settings cannot be read is named, not silently left out of the check.
    (odd / "recipe.yaml").unlink()
    *splits, warning = build_comparisons(scan_runs([mnli]).results)[0].warnings
    assert "1 of 10 runs have no readable recipe.yaml" in warning and str(odd) in warning
    assert "differ in unknown settings" in splits[0] and "settings unknown (no readable recipe.yaml)" in splits[0]


def test_tables_show_a_teacher_below_the_current_folder_relative_to_it(tmp_path, monkeypatch):
    from movprune.experiments.compare import build_comparisons, scan_runs

    write_run(tmp_path / "runs", "movement-r10-s1", "sst2", "movement", 10, 1, {"accuracy": 70.0},
              teacher=str(tmp_path / "results" / "dense"))
    write_run(tmp_path / "runs", "magnitude-r10-s1", "sst2", "magnitude", 10, 1, {"accuracy": 70.0},
              teacher="/elsewhere/dense")
    write_run(tmp_path / "runs", "l0-r10-s1", "sst2", "l0", 10, 1, {"accuracy": 70.0},
              teacher="results/./dense")  # the first teacher, written another way: the same table
    monkeypatch.chdir(tmp_path)
    titles = sorted(c.title for c in build_comparisons(scan_runs([tmp_path / "runs"]).results))
    assert titles == ["sst2 · minilm-l6 · distilled from /elsewhere/dense",
                      "sst2 · minilm-l6 · distilled from results/dense"]


def test_runs_differing_in_more_than_the_seed_never_share_a_cell(tmp_path):
    """Two seed-42 runs with different learning rates were printed as one "mean ± std over seeds"
    cell: they are separate columns, named by the differing setting, and a warning names the key."""
    root = tmp_path / "runs"
    for name, lr, acc in (("a", 1e-4, 80.0), ("b", 3e-5, 70.0)):
        write_run(root, name, "sst2", "movement", 10, 42, {"accuracy": acc})
        recipe = {"task": "sst2", "name": name, "seed": 42, "output_dir": str(root),
                  "pruner": {"method": "movement", "remaining_pct": 10}, "train": {"lr": lr}}
        (root / name / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    from typer.testing import CliRunner

    from movprune.cli.main import app

    res = CliRunner().invoke(app, ["compare", str(root), "--format", "json"])
    assert res.exit_code == 0, res.output
    (table,) = json.loads(res.stdout)
    # Typed columns sort by value (3e-05 before 0.0001), not by their text.
    assert table["pruners"] == ["movement [train.lr=3e-05]", "movement [train.lr=0.0001]"]
    cells = table["rows"][0]["cells"]
    assert cells["movement [train.lr=0.0001]"]["metrics"]["accuracy"] == {"mean": 80.0, "std": None, "n": 1}
    assert cells["movement [train.lr=3e-05]"]["metrics"]["accuracy"] == {"mean": 70.0, "std": None, "n": 1}
    assert ("sst2/movement at 10% remaining (90% sparse): the runs differ in train.lr, so they are shown as "
            "separate columns, not averaged") in " ".join(res.stderr.split())
