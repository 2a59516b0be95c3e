"""Hostile and careless input: every case exits 2 with one clear line, never a traceback.

To add a case, add one line to ``CASES``: an id, a function of the :class:`Sandbox` that builds the
command line (writing whatever bad file it needs), and a fragment the error line must contain.
Recipe cases use ``--dry-run`` unless they say otherwise: checks that can run before training run
there too. Every case also checks that no run file was written.
"""

from __future__ import annotations

import errno
import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from movprune.cli.main import app

from conftest import tiny_recipe_dict

#: "Billion laughs": 9 levels of 9 aliases expand to 9**9 values from a few hundred bytes.
ALIAS_BOMB = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(9)
) + "task: sst2\nname: *l8\n"


#: The same in one flow-style override value: 10 x 10 x 10 x 110 values.
OVERRIDE_BOMB = ("name=[&a [" + ",".join(["x"] * 10) + "], &b [" + ",".join(["*a"] * 10) + "], &c ["
                 + ",".join(["*b"] * 10) + "], [" + ",".join(["*c"] * 110) + "]]")


class Sandbox:
    """Builds bad inputs in a temporary folder; each method returns what a command line needs."""

    def __init__(self, tmp: Path, glue_dir: Path):
        self.tmp, self.glue_dir = tmp, glue_dir
        self.results = tmp / "results"

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def run(self, *overrides: str, dry_run: bool = True, **sections) -> list[str]:
        """``movprune run`` of a tiny valid recipe, with overrides (``--dry-run`` by default)."""
        recipe = self.file("recipe.yaml", yaml.safe_dump(tiny_recipe_dict(self.results, **sections)))
        return ["run", recipe, *overrides, *(["--dry-run"] if dry_run else [])]

    def raw(self, content: bytes | str) -> list[str]:
        """``movprune run --dry-run`` of a recipe file with exactly ``content``."""
        return ["run", self.file("raw.yaml", content), "--dry-run"]

    def glue(self, train_tsv: bytes | str) -> str:
        """A GLUE folder whose SST-2 train.tsv is ``train_tsv`` (dev.tsv is the real one)."""
        self.file("glue/SST-2/train.tsv", train_tsv)
        self.file("glue/SST-2/dev.tsv", (self.glue_dir / "SST-2" / "dev.tsv").read_bytes())
        return f"data_dir={self.tmp / 'glue'}"

    def model_folder(self, name: str = "model", **config) -> str:
        """A model folder with a tiny BERT config.json (plus ``config`` keys)."""
        from movprune.models import tiny_bert_config

        self.file(f"{name}/config.json", json.dumps({**tiny_bert_config().to_dict(), **config}))
        return str(self.tmp / name)

    def run_folder(self, safetensors: bytes) -> str:
        """A finished-looking run folder whose model/model.safetensors holds ``safetensors``."""
        result = {"name": "r", "task": "sst2", "model": "tiny-random-bert", "pruner": "magnitude",
                  "target_remaining_pct": 10, "remaining_pct": 10.0, "metrics": {"accuracy": 50.0},
                  "seed": 0, "steps": 1, "train_seconds": 1.0, "versions": {},
                  "remaining_by_module": {"bert.encoder.layer.0.attention.self.query": 10.0}}
        self.file("run/result.json", json.dumps(result))
        self.model_folder("run/model", architectures=["BertForSequenceClassification"])
        self.file("run/model/model.safetensors", safetensors)
        return str(self.tmp / "run")


CUSTOM_CODE = {"auto_map": {"AutoConfig": "evil.Config", "AutoModel": "evil.Model"}}
BINARY = random.Random(0).randbytes(4000)

CASES = [
    ("recipe not UTF-8", lambda s: s.raw(b"task: sst2\nname: caf\xe9\n"), "not UTF-8"),
    ("recipe is binary", lambda s: s.raw(BINARY), "not UTF-8"),
    ("recipe too large", lambda s: s.raw("# padding\n" * 200_000), "a recipe is at most"),
    ("YAML alias bomb", lambda s: s.raw(ALIAS_BOMB), "YAML values counting every alias use (more than 100,000"),
    ("huge value", lambda s: s.raw("task: sst2\nname: [" + "x, " * 50_000 + "]\n"),
     "name: Input should be a valid string (got ['x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x',... "
     "(250,000 characters))"),
    ("alias bomb in an override", lambda s: s.run(OVERRIDE_BOMB), "YAML values counting every alias use"),
    ("key of another method", lambda s: s.run("pruner.lambda_final=400"),
     "pruner.lambda_final: method 'movement' has no key lambda_final; it is a key of soft_movement, l0"),
    ("method not a name", lambda s: s.run("pruner.method=[movement]"),
     "pruner.method: unknown value '['movement']' (choose one of 'none', 'magnitude', 'movement'"),
    ("seed -1", lambda s: s.run("seed=-1"), "seed: Input should be greater than or equal to 0"),
    ("seed past 2**32", lambda s: s.run(f"seed={2**32}"), "seed: Input should be less than"),
    ("empty TSV", lambda s: s.run(s.glue("")), "train.tsv: no rows found"),
    ("TSV with only a header", lambda s: s.run(s.glue("sentence\tlabel\n")), "train.tsv: no rows found"),
    ("binary TSV", lambda s: s.run(s.glue(BINARY)), "train.tsv: not UTF-8"),
    ("label out of range", lambda s: s.run(s.glue("sentence\tlabel\ngood\t1\nodd\t7\n")),
     "train.tsv:3: label 7 is out of range for sst2 (0 .. 1)"),
    ("label out of range, no --dry-run", lambda s: s.run(s.glue("sentence\tlabel\nodd\t-1\n"), dry_run=False),
     "train.tsv:2: label -1 is out of range"),
    ("empty train slice", lambda s: s.run("train_split=train[:0]"), "train_split 'train[:0]': task sst2: split"),
    ("empty eval slice", lambda s: s.run("eval_split=validation[5:5]"), "has no examples"),
    ("output_dir is a file", lambda s: s.run(f"output_dir={s.file('notes.txt', 'x')}"),
     "output_dir: '{tmp}/notes.txt' is a file, not a folder"),
    ("output_dir under a file", lambda s: s.run(f"output_dir={s.file('notes.txt', 'x')}/sub"), "is a file"),
    ("run folder is a file", lambda s: s.run(f"name={s.file('results/notes', 'x') and 'notes'}", dry_run=False),
     "{tmp}/results/notes exists and is not a folder; movprune never replaces it"),
    ("model folder asks for custom code", lambda s: s.run(f"model={s.model_folder(**CUSTOM_CODE)}"),
     "asks to run custom code (auto_map: AutoConfig, AutoModel); movprune loads models with trust_remote_code=False"),
    ("teacher folder asks for custom code",
     lambda s: s.run(f"distill.teacher={s.model_folder('teacher', **CUSTOM_CODE)}"),
     "distill.teacher '{tmp}/teacher': {tmp}/teacher/config.json asks to run custom code"),
    ("corrupt safetensors: inspect", lambda s: ["inspect", s.run_folder(BINARY[:300])],
     "model.safetensors: the saved model cannot be read (SafetensorError"),
    ("corrupt safetensors: export", lambda s: ["export", s.run_folder(b"\x08" + bytes(20)), "--to",
                                               str(s.tmp / "exported"), "--format", "dense", "--no-latency"],
     "the saved model cannot be read (SafetensorError"),
]


@pytest.fixture
def sandbox(tmp_path, glue_dir) -> Sandbox:
    return Sandbox(tmp_path, glue_dir)


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "400"})


def assert_one_line_error(result, fragment: str) -> None:
    """Exit 2, one ``error:`` line holding ``fragment``, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("build, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_with_one_line(sandbox, build, fragment):
    result = invoke(build(sandbox))
    assert_one_line_error(result, fragment.format(tmp=sandbox.tmp))
    written = [p for p in sandbox.results.rglob("*") if p.name in ("recipe.yaml", "metrics.jsonl", "result.json")]
    assert not written, "nothing may be written before the input is checked"


def test_full_disk_is_one_line(sandbox, monkeypatch):
    """ENOSPC while writing the run folder (the first write is recipe.yaml)."""
    from movprune.training import loop as train

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train, "atomic_write_text", full)
    result = invoke(sandbox.run(dry_run=False))
    assert_one_line_error(result, f"cannot write {sandbox.results}/tiny-sst2/recipe.yaml: no space left on the device")


def test_other_os_errors_are_not_disguised():
    """Only storage errors become a one-line message; any other OSError stays a bug to report."""
    from movprune.io import storage_error

    assert storage_error(OSError(errno.EDQUOT, "quota", "/x")) is not None
    assert storage_error(OSError(errno.EIO, "I/O error", "/x")) is None


def test_non_finite_loss_stops_the_run_without_a_result(sandbox):
    """``train.lr=.inf`` used to train to NaN and be written as a finished run."""
    result = invoke(sandbox.run("train.lr=.inf", "train.max_steps=6", "train.log_every_steps=3", dry_run=False))
    assert_one_line_error(result, "step 3: the training loss diverged (loss_task = nan")
    assert "Lower train.lr (now inf)" in result.output
    run_dir = sandbox.results / "tiny-sst2"
    assert (run_dir / "recipe.yaml").is_file() and not (run_dir / "result.json").exists()
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [3]  # the diverged window is logged, then the run stops


def test_recipe_with_a_few_aliases_still_loads(tmp_path):
    """Anchors and aliases are legitimate; only an explosive expansion is refused."""
    from movprune.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("task: sst2\ntrain: {max_steps: &n 5, log_every_steps: *n}\n")
    recipe = load_recipe(path)
    assert (recipe.train.max_steps, recipe.train.log_every_steps) == (5, 5)


def test_hub_labels_outside_the_classes_are_refused(monkeypatch):
    """GLUE's Hub test splits carry label -1; training on one failed mid-run with an IndexError."""
    from datasets import Dataset

    from movprune.errors import DataError
    from movprune.tasks import get_task, glue

    hub = Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [1, -1, -1]})
    monkeypatch.setattr(glue, "load_hub_split", lambda *args: hub)
    with pytest.raises(DataError, match=r"split 'test': example 1 has label -1, outside sst2's classes 0 \.\. 1 "
                                        r"\(2 such examples"):
        get_task("sst2").load_split(None, "test")


def test_hub_model_with_custom_code_is_refused(monkeypatch):
    """transformers raises ValueError for a Hub repository with custom code when trust_remote_code=False."""
    import transformers

    from movprune.errors import ModelError
    from movprune.models import resolve_model

    def refuse(spec, trust_remote_code=None):
        assert trust_remote_code is False
        raise ValueError(f"{spec} contains custom code ... Please pass the argument `trust_remote_code=True`")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    with pytest.raises(ModelError, match="'someone/custom-bert': this Hub repository needs custom code; movprune "
                                         "loads models with trust_remote_code=False"):
        resolve_model("someone/custom-bert")


def test_weights_gone_non_finite_after_the_last_logged_loss_stop_the_run():
    import torch

    from movprune.errors import TrainingDivergedError
    from movprune.training.guards import check_finite_loss, check_finite_weights

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    check_finite_weights(model)
    check_finite_loss({"step": 5, "loss": 0.7, "loss_task": 0.7, "lr": 1e-3}, 1e-3)
    with torch.no_grad():
        model[1].weight[0, 1] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"1 weight tensors hold NaN or infinite values after "
                                                    r"training \(first: 1.weight\)"):
        check_finite_weights(model)
    with pytest.raises(TrainingDivergedError, match=r"step 5: the training loss diverged \(loss_penalty = inf\)"):
        check_finite_loss({"step": 5, "loss_task": 0.7, "loss_penalty": float("inf")}, 1e-3)
