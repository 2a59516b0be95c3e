"""`movprune compare --figure weights|layers`: the paper's Figures 3 and 4 from run folders, their CSV
checked against the saved models' weights, recomputed here from the safetensors files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from conftest import run_cli, tiny_recipe_dict

# The six encoder matrices of a BERT layer, by module-name ending (attention output before FFN out,
# whose ending it shares).
BERT_KINDS = (("attention.self.query", "Q"), ("attention.self.key", "K"), ("attention.self.value", "V"),
              ("attention.output.dense", "attention output"), ("intermediate.dense", "FFN in"),
              ("output.dense", "FFN out"))


@pytest.fixture(scope="module")
def magnitude_run(tmp_path_factory) -> Path:
    """A second tiny finished run, with magnitude pruning to 10% remaining (local), 6 steps."""
    root = tmp_path_factory.mktemp("figures-magnitude")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(
        root / "results", name="tiny-magnitude", pruner={"method": "magnitude", "remaining_pct": 10},
        train={"max_steps": 6})))
    proc = run_cli("run", str(recipe))
    assert proc.returncode == 0, proc.stderr
    return root / "results" / "tiny-magnitude"


def saved_matrices(run_dir: Path) -> dict[str, np.ndarray]:
    """The run's pruned matrices (the modules its result.json names), read straight from the file."""
    tensors = load_file(str(run_dir / "model" / "model.safetensors"))
    modules = json.loads((run_dir / "result.json").read_text())["remaining_by_module"]
    return {m: tensors[m + ".weight"].astype(np.float64) for m in modules}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def draw(figure: str, runs: list[Path], tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    png = tmp_path / "figs" / f"{figure}.png"
    res = run_cli("compare", *map(str, runs), "--figure", figure, "--plot", str(png))
    assert res.returncode == 0, res.stderr
    assert f"data → {png.with_suffix('.csv')}" in res.stderr
    return png, read_csv(png.with_suffix(".csv"))


def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] > 200 and image.size[1] > 200


def test_weights_csv_counts_are_the_histograms_of_the_saved_kept_weights(finished_run, magnitude_run, tmp_path):
    png, rows = draw("weights", [finished_run, magnitude_run], tmp_path)
    assert_png(png)
    assert list(rows[0]) == ["run", "method", "remaining_pct", "bin_left", "bin_right", "count"]
    by_run: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    assert {Path(r).resolve() for r in by_run} == {finished_run.resolve(), magnitude_run.resolve()}

    kept = {Path(r).resolve(): np.concatenate([w[w != 0] for w in saved_matrices(Path(r)).values()])
            for r in by_run}
    edges_of = {}
    for run, run_rows in by_run.items():
        edges = np.array([float(r["bin_left"]) for r in run_rows] + [float(run_rows[-1]["bin_right"])])
        assert np.all(np.diff(edges) > 0)
        edges_of[run] = edges
        counts = np.array([int(r["count"]) for r in run_rows])
        values = kept[Path(run).resolve()]
        np.testing.assert_array_equal(counts, np.histogram(values, bins=edges)[0])
        assert counts.sum() == values.size  # every kept weight is in a bin, the tails included
        result = json.loads((Path(run) / "result.json").read_text())
        assert {r["method"] for r in run_rows} == {result["pruner"]}
        assert float(run_rows[0]["remaining_pct"]) == pytest.approx(result["remaining_pct"])
    first, second = edges_of.values()
    np.testing.assert_array_equal(first, second)  # every panel has the same bins

    # The bins: 100 uniform ones over +-the largest 99.9% quantile of |kept|, a tail bin each side to +-max.
    largest = max(np.abs(v).max() for v in kept.values())
    central = max(np.quantile(np.abs(v), 0.999) for v in kept.values())
    assert len(first) == 103
    assert first[0] == pytest.approx(-largest) and first[-1] == pytest.approx(largest)
    assert first[1] == pytest.approx(-central) and first[-2] == pytest.approx(central)
    np.testing.assert_allclose(np.diff(first[1:-1]), 2 * central / 100)
    # Magnitude keeps the largest |W| only: no kept weight of it lies near 0; movement keeps some.
    assert np.abs(kept[magnitude_run.resolve()]).min() > np.quantile(np.abs(kept[finished_run.resolve()]), 0.05)


def test_layers_csv_counts_kept_and_total_per_layer_and_matrix(finished_run, magnitude_run, tmp_path):
    png, rows = draw("layers", [finished_run, magnitude_run], tmp_path)
    assert_png(png)
    assert list(rows[0]) == ["run", "method", "layer", "matrix", "kept", "total", "remaining_pct"]
    for run_dir in (finished_run, magnitude_run):
        expected: dict[tuple[str, str], list[int]] = {}
        for module, weight in saved_matrices(run_dir).items():
            layer = re.search(r"\.layer\.(\d+)\.", module).group(1)
            kind = next(k for end, k in BERT_KINDS if module.endswith(end))
            for key in ((layer, kind), (layer, "all")):
                entry = expected.setdefault(key, [0, 0])
                entry[0] += int(np.count_nonzero(weight))
                entry[1] += weight.size
        got = {(r["layer"], r["matrix"]): r for r in rows if Path(r["run"]).resolve() == run_dir.resolve()}
        assert set(got) == set(expected)
        for key, (kept, total) in expected.items():
            assert (int(got[key]["kept"]), int(got[key]["total"])) == (kept, total), key
            assert float(got[key]["remaining_pct"]) == pytest.approx(100 * kept / total)
        # Summed over the layers, the counts are the run's own remaining weights.
        result = json.loads((run_dir / "result.json").read_text())
        kept_all = sum(int(r["kept"]) for r in got.values() if r["matrix"] == "all")
        total_all = sum(int(r["total"]) for r in got.values() if r["matrix"] == "all")
        assert 100 * kept_all / total_all == pytest.approx(result["remaining_pct"])
    # Global movement leaves matrices at different densities; local magnitude keeps 10% of each.
    magnitude = {float(r["remaining_pct"]) for r in rows
                 if Path(r["run"]).resolve() == magnitude_run.resolve() and r["matrix"] != "all"}
    assert max(magnitude) - min(magnitude) < 1.0


def one_error_line(res) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith("error:")
    return errors[0]


def test_an_unknown_figure_is_a_one_line_error(finished_run, tmp_path):
    line = one_error_line(run_cli("compare", str(finished_run), "--figure", "histogram",
                                  "--plot", str(tmp_path / "f.png")))
    assert "--figure 'histogram': not a figure; use --figure weights" in line
    assert not (tmp_path / "f.png").exists()


def test_a_figure_without_plot_is_a_one_line_error(finished_run):
    line = one_error_line(run_cli("compare", str(finished_run), "--figure", "layers"))
    assert "--figure layers draws into the file of --plot: add --plot FILE.png" in line


def test_a_run_without_its_saved_model_is_a_one_line_error(finished_run_copy, tmp_path):
    (finished_run_copy / "model" / "model.safetensors").unlink()
    line = one_error_line(run_cli("compare", str(finished_run_copy), "--figure", "weights",
                                  "--plot", str(tmp_path / "f.png")))
    assert f"{finished_run_copy}: no model/*.safetensors to read the weights from" in line


def test_a_figure_into_a_csv_path_is_a_one_line_error(finished_run, tmp_path):
    line = one_error_line(run_cli("compare", str(finished_run), "--figure", "weights",
                                  "--plot", str(tmp_path / "f.csv")))
    assert "the figure's data is written to FILE.csv beside the image" in line
    assert not (tmp_path / "f.csv").exists()


SIX_KINDS = {"Q", "K", "V", "attention output", "FFN in", "FFN out"}


@pytest.mark.parametrize("model, kinds", [
    ("tiny-random-roberta", SIX_KINDS),
    ("tiny-random-distilbert", SIX_KINDS),
    ("tiny-random-modernbert", {"QKV", "attention output", "FFN in", "FFN out"}),
])
def test_layers_name_every_matrix_kind_of_other_families(model, kinds, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(
        tmp_path / "results", name="fam", model=model, pruner={"method": "magnitude", "remaining_pct": 30},
        train={"max_steps": 3, "max_eval_samples": 16})))
    proc = run_cli("run", str(recipe))
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "results" / "fam"
    _, rows = draw("layers", [run_dir], tmp_path)
    matrices = saved_matrices(run_dir)
    layers = {re.search(r"\.layers?\.(\d+)\.", m).group(1) for m in matrices}
    assert {(r["layer"], r["matrix"]) for r in rows} == {(layer, k) for layer in layers for k in (*kinds, "all")}
    for layer in layers:
        mine = [w for m, w in matrices.items() if f".{layer}." in m]
        row = next(r for r in rows if r["layer"] == layer and r["matrix"] == "all")
        assert (int(row["kept"]), int(row["total"])) == (sum(int(np.count_nonzero(w)) for w in mine),
                                                         sum(w.size for w in mine))
        by_kind = [r for r in rows if r["layer"] == layer and r["matrix"] != "all"]
        assert sum(int(r["kept"]) for r in by_kind) == int(row["kept"])


def test_a_result_without_remaining_by_module_reads_the_same_matrices(finished_run, finished_run_copy, tmp_path):
    result_path = finished_run_copy / "result.json"
    result = json.loads(result_path.read_text())
    del result["remaining_by_module"]
    result_path.write_text(json.dumps(result))
    _, original = draw("layers", [finished_run], tmp_path / "a")
    _, fallback = draw("layers", [finished_run_copy], tmp_path / "b")
    strip = [{k: v for k, v in r.items() if k != "run"} for r in original]
    assert strip == [{k: v for k, v in r.items() if k != "run"} for r in fallback]


def test_a_model_sharded_over_two_files_gives_the_same_figures(finished_run, finished_run_copy, tmp_path):
    from safetensors.numpy import save_file

    model = finished_run_copy / "model"
    tensors = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    keys = sorted(tensors)
    save_file({k: tensors[k] for k in keys[::2]}, str(model / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in keys[1::2]}, str(model / "model-00002-of-00002.safetensors"))
    for figure in ("weights", "layers"):
        _, original = draw(figure, [finished_run], tmp_path / "a")
        _, sharded = draw(figure, [finished_run_copy], tmp_path / "b")
        assert [{k: v for k, v in r.items() if k != "run"} for r in original] == \
            [{k: v for k, v in r.items() if k != "run"} for r in sharded]


def test_a_pruned_matrix_missing_from_the_saved_model_is_a_one_line_error(finished_run_copy, tmp_path):
    result_path = finished_run_copy / "result.json"
    result = json.loads(result_path.read_text())
    result["remaining_by_module"]["bert.encoder.layer.7.attention.self.query"] = 10.0
    result_path.write_text(json.dumps(result))
    line = one_error_line(run_cli("compare", str(finished_run_copy), "--figure", "layers",
                                  "--plot", str(tmp_path / "f.png")))
    assert "no single saved weight for the pruned matrix bert.encoder.layer.7.attention.self.query" in line
