"""SQuAD v1.1: official metrics, windowing and answer mapping, article-disjoint splits, shipped
recipes, and an end-to-end CLI run on the real dev file."""

from __future__ import annotations

import json
import re
import string
from collections import Counter

import numpy as np
import pytest
from datasets import Dataset

from movprune.errors import DataError
from movprune.models import resolve_model
from movprune.recipe import load_recipe
from movprune.tasks import get_task
from movprune.tasks.squad import (
    FEATURES,
    best_answers,
    eval_features,
    exact_match_score,
    f1_score,
    normalize_answer,
    read_squad_json,
    squad_metrics,
    train_features,
)

from conftest import REPO, SQUAD_DIR, TINY_SQUAD_DIR, run_cli

RECIPES = REPO / "src" / "movprune" / "recipes"


@pytest.fixture(scope="module")
def tokenizer():
    """tiny-random-bert's tokenizer (MiniLM's fast BERT uncased tokenizer)."""
    return resolve_model("tiny-random-bert").tokenizer()


@pytest.fixture(scope="module")
def dev() -> Dataset:
    """The whole real dev file (read once per module; for the ``full_data`` checks)."""
    return read_squad_json(SQUAD_DIR / "dev-v1.1.json")


@pytest.fixture(scope="module")
def tiny_dev() -> Dataset:
    """The checked-in cut of the dev file: 180 questions of 3 articles."""
    return read_squad_json(TINY_SQUAD_DIR / "dev-v1.1.json")


# ------------------------------------------------------------------------------------------------
# Metrics on hand-made cases


@pytest.mark.parametrize("text,expected", [
    ("The Denver Broncos", "denver broncos"),
    ("  an   Apple,  a day!  ", "apple day"),
    ("theater anthem", "theater anthem"),  # articles only as whole words
    ("A.D. 1066", "ad 1066"),  # punctuation goes before articles are matched
    ("U.S.-based", "usbased"),
    ("the", ""),
    ("\"Golden Anniversary\"", "golden anniversary"),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_f1_hand_cases():
    assert exact_match_score("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match_score("Denver", "Denver Broncos") == 0.0
    # 2 of 3 predicted tokens are in the 2-token gold: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count with multiplicity: common {y: 2}; P = R = 2/3
    assert f1_score("x y y", "y y z") == pytest.approx(2 / 3)
    assert f1_score("y", "y y") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1_score("Carolina", "Denver Broncos") == 0.0
    # both normalise to nothing: equal strings (EM 1) but no common token (F1 0), as the official script
    assert exact_match_score("The", "a") == 1.0
    assert f1_score("The", "a") == 0.0


def test_squad_metrics_max_over_golds_and_missing_predictions():
    refs = [
        ("q1", ["Broncos", "Denver Broncos"]),  # F1 vs each: 0.5, 0.8 -> 0.8; EM 0
        ("q2", ["paris.", "Paris, France"]),  # EM 1 via the first
        ("q3", ["anything"]),  # no prediction: counts 0
    ]
    preds = {"q1": "Denver Broncos team", "q2": "Paris", "extra": "ignored"}
    m = squad_metrics(preds, refs)
    assert m["exact_match"] == pytest.approx(100 / 3)
    assert m["f1"] == pytest.approx(100 * (0.8 + 1.0 + 0.0) / 3)


@pytest.mark.full_data
def test_gold_answers_as_predictions_score_100(dev):
    refs = list(zip(dev["id"], (a["text"] for a in dev["answers"])))
    assert len(refs) == 10570
    preds = {qid: golds[0] for qid, golds in refs}
    assert squad_metrics(preds, refs) == {"exact_match": 100.0, "f1": 100.0}
    # Three questions list "." among their golds: predicting it is an exact match but, having no
    # token after normalisation, scores F1 0 (the official script's arithmetic).
    dots = [(qid, golds) for qid, golds in refs if "." in golds]
    assert len(dots) == 3
    assert squad_metrics({qid: "." for qid, _ in dots}, dots) == {"exact_match": 100.0, "f1": 0.0}
    wrong = {qid: "zzz" for qid, _ in refs}
    assert squad_metrics(wrong, refs) == {"exact_match": 0.0, "f1": 0.0}


# ------------------------------------------------------------------------------------------------
# Windows and answer mapping


def _long_example() -> Dataset:
    filler = " ".join(f"Sentence {i} mentions nothing useful about rivers." for i in range(40))
    answer = "The Quiet Lighthouse of Ravensworth"
    context = f"{filler} Its name was {answer}, built in 1852. {filler}"
    return Dataset.from_list([{
        "id": "long-1", "title": "T", "context": context, "question": "What was its name?",
        "answers": {"text": [answer], "answer_start": [context.index(answer)]},
    }], features=FEATURES), answer


def test_long_context_gives_several_windows_and_the_answer_maps_back(tokenizer):
    examples, answer = _long_example()
    start_char = examples[0]["answers"]["answer_start"][0]
    end_char = start_char + len(answer)
    max_len, stride = 64, 16
    kwargs = {"tokenizer": tokenizer, "max_len": max_len, "doc_stride": stride}
    train = examples.map(train_features, batched=True, remove_columns=examples.column_names, fn_kwargs=kwargs)
    evalf = examples.map(eval_features, batched=True, remove_columns=examples.column_names, fn_kwargs=kwargs)
    assert len(train) == len(evalf) > 5
    assert all(len(ids) <= max_len for ids in evalf["input_ids"])
    assert set(evalf["example_id"]) == {"long-1"}

    # The windows cover every context character; consecutive windows overlap by `stride` tokens.
    covered = np.zeros(len(examples[0]["context"]), dtype=bool)
    spans = []
    for offsets in evalf["offset_mapping"]:
        ctx = [o for o in offsets if o is not None]
        spans.append(ctx)
        for a, b in ctx:
            covered[a:b] = True
    ctx_text = examples[0]["context"]
    assert all(covered[i] for i, ch in enumerate(ctx_text) if not ch.isspace())
    for prev, nxt in zip(spans, spans[1:]):
        assert prev[-stride:] == nxt[:stride]

    # Training targets: the answer's tokens in windows that hold it whole, CLS (index 0) elsewhere.
    holding = []
    for i, f in enumerate(train):
        s, e = f["start_positions"], f["end_positions"]
        offs = evalf[i]["offset_mapping"]
        ctx = [o for o in offs if o is not None]
        if ctx[0][0] <= start_char and ctx[-1][1] >= end_char:
            holding.append(i)
            assert (offs[s][0], offs[e][1]) == (start_char, end_char)
        else:
            assert (s, e) == (0, 0)
    assert 1 <= len(holding) < len(train)

    # Logits: very low everywhere (so a strong start cannot pair with a random end), the gold span
    # in the last window holding it, a weaker decoy span in another window, stronger but invalid
    # spans in two more (longer than 30 tokens; end before start), and the strongest on CLS.
    rng = np.random.default_rng(0)
    starts = [rng.normal(-100, 0.1, len(ids)).astype(np.float32) for ids in evalf["input_ids"]]
    ends = [rng.normal(-100, 0.1, len(ids)).astype(np.float32) for ids in evalf["input_ids"]]

    def ctx_tokens(w):
        return [t for t, o in enumerate(evalf[w]["offset_mapping"]) if o is not None]

    target = holding[-1]
    offs = evalf[target]["offset_mapping"]
    s_tok = next(t for t, o in enumerate(offs) if o is not None and o[0] == start_char)
    e_tok = next(t for t, o in enumerate(offs) if o is not None and o[1] == end_char)
    starts[target][s_tok] += 105
    ends[target][e_tok] += 105
    decoy, too_long, backwards = [w for w in range(len(evalf)) if w not in holding][:3]
    d_ctx = ctx_tokens(decoy)
    starts[decoy][d_ctx[2]] += 104
    ends[decoy][d_ctx[4]] += 104
    l_ctx = ctx_tokens(too_long)
    assert len(l_ctx) > 32
    starts[too_long][l_ctx[0]] += 110
    ends[too_long][l_ctx[30]] += 110  # 31 tokens
    b_ctx = ctx_tokens(backwards)
    starts[backwards][b_ctx[10]] += 110
    ends[backwards][b_ctx[5]] += 110
    starts[target][0] += 150  # CLS is never an answer in v1.1
    ends[target][0] += 150

    preds = best_answers(examples, evalf, starts, ends)
    assert preds == {"long-1": answer}
    # Without the gold logits, the valid decoy wins; its text is the context's own characters.
    starts[target][s_tok] -= 5
    ends[target][e_tok] -= 5
    d_offs = evalf[decoy]["offset_mapping"]
    decoy_text = ctx_text[d_offs[d_ctx[2]][0]:d_offs[d_ctx[4]][1]]
    assert best_answers(examples, evalf, starts, ends) == {"long-1": decoy_text}
    # A 31-token span is allowed when the limit says so.
    l_offs = evalf[too_long]["offset_mapping"]
    long_text = ctx_text[l_offs[l_ctx[0]][0]:l_offs[l_ctx[30]][1]]
    assert best_answers(examples, evalf, starts, ends, max_answer_tokens=31) == {"long-1": long_text}


def test_stride_that_cannot_fit_is_a_clear_error(tokenizer, tiny_dev):
    examples = tiny_dev.select(range(4))
    with pytest.raises(DataError, match="doc_stride"):
        examples.map(train_features, batched=True, remove_columns=examples.column_names,
                     fn_kwargs={"tokenizer": tokenizer, "max_len": 32, "doc_stride": 30})


# ------------------------------------------------------------------------------------------------
# Data and recipes


@pytest.mark.full_data
def test_local_dev_file_matches_its_published_counts(dev, squad_dir):
    assert len(dev) == 10570
    assert len(set(dev["id"])) == 10570
    assert len(set(dev["title"])) == 48
    assert sum(len(a["text"]) for a in dev["answers"]) == 34726
    for row in dev.select(range(0, 10570, 97)):
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start:start + len(text)] == text
    task = get_task("squad")
    assert task.load_split(str(squad_dir), "validation[100:110]")["id"] == dev["id"][100:110]
    assert task.check_data(str(squad_dir), ["train", "validation"]) == [
        f"data_dir: {squad_dir / 'train-v1.1.json'} not found (data_dir must hold the official "
        "train-v1.1.json, dev-v1.1.json; set data_dir: null to use the Hugging Face Hub)"]
    assert "no split 'test'" in task.check_data(str(squad_dir), ["test"])[0]


@pytest.mark.full_data
def test_cpu_recipe_splits_keep_articles_apart(squad_dir):
    recipe = load_recipe(RECIPES / "cpu" / "squad-movement.yaml", [f"data_dir={squad_dir}"])
    task = get_task(recipe.task)
    train = task.load_split(recipe.data_dir, recipe.train_split)
    evals = task.load_split(recipe.data_dir, recipe.eval_split)
    assert len(train) + len(evals) == 10570
    assert not set(train["id"]) & set(evals["id"])
    assert not set(train["title"]) & set(evals["title"])
    assert len(set(train["title"])) + len(set(evals["title"])) == 48
    assert recipe.train.max_eval_samples == 500  # the articles the recipe's comment names
    assert set(evals.select(range(500))["title"]) == {
        "Kenya", "Intergovernmental_Panel_on_Climate_Change", "Chloroplast"}
    # Why the recipe does not use the round 80%: it would cut one article in two.
    naive_train = set(task.load_split(recipe.data_dir, "validation[:80%]")["title"])
    naive_eval = set(task.load_split(recipe.data_dir, "validation[80%:]")["title"])
    assert naive_train & naive_eval == {"Kenya"}


# ------------------------------------------------------------------------------------------------
# End to end through the CLI


def _official_v11(dataset: list[dict], predictions: dict[str, str]) -> dict[str, float]:
    """A transcription of the official evaluate-v1.1.py, kept independent of movprune's code."""

    def normalize(s):
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(p, g):
        pt, gt = normalize(p).split(), normalize(g).split()
        same = sum((Counter(pt) & Counter(gt)).values())
        if same == 0:
            return 0
        prec, rec = same / len(pt), same / len(gt)
        return 2 * prec * rec / (prec + rec)

    em = f = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                golds = [a["text"] for a in qa["answers"]]
                pred = predictions[qa["id"]]
                em += max(float(normalize(pred) == normalize(g)) for g in golds)
                f += max(f1(pred, g) for g in golds)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f / total}


def test_cli_run_writes_predictions_whose_official_scores_match_result(write_recipe, tiny_squad_dir, tmp_path):
    path = write_recipe(
        "squad", data_dir=str(tiny_squad_dir), train_split="validation[:120]", eval_split="validation[120:180]",
        train={"max_steps": 10, "max_seq_length": 128, "doc_stride": 64, "max_train_samples": None,
               "max_eval_samples": None, "batch_size": 8})
    proc = run_cli("run", str(path))
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "results" / "tiny-squad"
    result = json.loads((run_dir / "result.json").read_text())
    predictions = json.loads((run_dir / "predictions.json").read_text())
    assert result["metric_names"] == ["exact_match", "f1"]
    assert result["remaining_pct"] == pytest.approx(10, abs=0.01)

    raw = json.loads((tiny_squad_dir / "dev-v1.1.json").read_text())["data"]
    qas = [(qa, p["context"]) for a in raw for p in a["paragraphs"] for qa in p["qas"]]
    wanted = {qa["id"]: ctx for qa, ctx in qas[120:180]}
    assert set(predictions) == set(wanted)
    assert all(pred in wanted[qid] for qid, pred in predictions.items())  # spans of the context
    subset = [{"paragraphs": [{"qas": [qa for qa, _ in qas[120:180]]}]}]
    assert result["metrics"] == pytest.approx(_official_v11(subset, predictions), abs=1e-9)


def test_cli_missing_train_file_names_it(write_recipe):
    path = write_recipe("squad")  # the fixture folder has no train file; train_split defaults to 'train'
    proc = run_cli("run", str(path))
    assert proc.returncode == 2
    assert "train-v1.1.json not found" in proc.stderr
    assert "Traceback" not in proc.stderr
