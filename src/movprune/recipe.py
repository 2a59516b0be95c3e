"""The recipe: a strict, typed description of one run, read from YAML plus ``key=value`` overrides.

This schema is a public contract (shipped recipes and users' files rely on it): extend it, do not
rename keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from movprune.errors import RecipeError
from movprune.pruners.config import PrunerConfig, pruner_config
from movprune.run_folder import check_run_name
from movprune.schema import StrictModel
from movprune.suggest import did_you_mean
from movprune.tasks.config import DatasetConfig, dataset_for_file


class TrainConfig(StrictModel):
    """Optimisation and data-size settings shared by every task and pruner."""

    epochs: float = Field(default=1, gt=0)
    max_steps: int | None = Field(
        default=None, ge=0,
        description="overrides epochs when set; 0 trains nothing (prune, evaluate, bake, publish: "
                    "one-shot methods and magnitude pruning of a fine-tuned model)")
    batch_size: int = Field(default=32, gt=0)
    eval_batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=3e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    lr_warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_seq_length: int | None = Field(default=None, gt=8, description="null = the task's default")
    doc_stride: int = Field(default=128, gt=0, description="question answering only")
    bf16: bool = False
    freeze_embeddings: bool = True
    log_every_steps: int = Field(default=10, gt=0)
    eval_every_steps: int | None = Field(default=None, gt=0, description="null = evaluate at the end only")
    max_train_samples: int | None = Field(default=None, gt=0)
    max_eval_samples: int | None = Field(default=None, gt=0)
    save_every_steps: int | None = Field(
        default=None, gt=0, description="checkpoint every N steps (null: only on SIGTERM / Ctrl-C)")
    keep_checkpoints: int = Field(default=2, gt=0, description="newest checkpoints kept")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="live trackers (accelerate's); tensorboard writes under the run folder")


class DistillConfig(StrictModel):
    """Knowledge distillation from a dense teacher (the paper's Table 3)."""

    teacher: str
    alpha_ce: float = Field(default=0.5, ge=0)
    alpha_distil: float = Field(default=0.5, ge=0)
    temperature: float = Field(default=2.0, gt=0)


class Recipe(StrictModel):
    """One run: task, model, data, pruner, training and (optionally) distillation."""

    name: str | None = Field(default=None, description="results go to <output_dir>/<name>/")
    task: str
    dataset: DatasetConfig | None = Field(
        default=None, description="your own data: required by the families text_classification, "
        "regression, extractive_qa; not allowed with a built-in task")
    model: str = "minilm-l6"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str | None = Field(default=None, description="null = the task's default")
    seed: int = Field(default=42, ge=0, lt=2**32, description="numpy and torch accept 0 .. 2**32-1")
    output_dir: str = "results"
    pruner: PrunerConfig = Field(default_factory=pruner_config)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig | None = None

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, name: str | None) -> str | None:
        # The name becomes a folder under output_dir: it must not reach outside it ('..', '/').
        problem = None if name is None else check_run_name(name)
        if problem:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _derived_name_is_safe(self) -> Recipe:
        problem = None if self.name is not None else check_run_name(self.run_name)
        if problem:
            raise ValueError(f"the run name derived from task, pruner and seed, {self.run_name!r}, is not "
                             f"usable ({problem}); set name=<run name>")
        return self

    @property
    def run_name(self) -> str:
        """The run folder's name: ``name`` if given, else derived from task, pruner and seed."""
        if self.name:
            return self.name
        p = self.pruner
        level = "dense" if p.remaining_pct is None else f"{p.remaining_pct:g}pct"
        return f"{self.task}-{p.method}-{level}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<run_name>``."""
        return Path(self.output_dir) / self.run_name

    def to_yaml(self) -> str:
        """The resolved recipe as YAML, loadable again by :func:`load_recipe`."""
        data = self.model_dump(mode="json")
        if self.dataset is not None:
            data["dataset"] = dataset_for_file(self.task, self.dataset)
        return yaml.safe_dump(data, sort_keys=False)


# --------------------------------------------------------------------------------------------
# Reading and validating

#: A recipe is a few dozen lines; anything larger is not a recipe (and is not read into memory).
MAX_RECIPE_BYTES = 1 << 20
#: Nodes of a recipe's YAML with every alias expanded. Anchors and aliases are allowed (a shared
#: section is legitimate), but nested aliases can expand exponentially ("billion laughs").
MAX_YAML_NODES = 100_000


class _YamlTooLarge(yaml.YAMLError):
    pass


def _expanded_nodes(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes under ``node`` counting every alias use again (memoised: linear in the document)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_nodes(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents whose aliases expand past :data:`MAX_YAML_NODES`."""

    def construct_document(self, node: yaml.Node):
        size = _expanded_nodes(node, {})
        if size > MAX_YAML_NODES:
            raise _YamlTooLarge(f"it holds {size:,} YAML values counting every alias use (more than "
                                f"{MAX_YAML_NODES:,}; a recipe has a few dozen): write the values out "
                                "instead of nesting aliases, or check that this is a recipe")
        return super().construct_document(node)


def safe_load_bounded(text: str) -> Any:
    """``yaml.safe_load`` with alias expansion bounded (see :class:`BoundedSafeLoader`)."""
    return yaml.load(text, Loader=BoundedSafeLoader)


def _walk(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[BaseModel] | None]:
    """``loc`` as the recipe's keys, and the schema section holding its last key (None when unknown).

    pydantic puts the tag of a discriminated union's member into the location
    (``pruner.movement.scores_lr``); the recipe has no such key, so it is left out."""
    model: type[BaseModel] | None = Recipe
    keys: list[Any] = []
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        keys.append(part)
        if not parts:
            break
        field = model.model_fields.get(str(part)) if model is not None else None
        ann = field.annotation if field is not None else None
        members = [c for c in (ann, *get_args(ann)) if isinstance(c, type) and issubclass(c, BaseModel)]
        tag = field.discriminator if field is not None else None
        tagged = [m for m in members if isinstance(tag, str) and parts[0] in get_args(m.model_fields[tag].annotation)]
        if tagged:
            parts.pop(0)
        model = (tagged or members or [None])[0]
    return tuple(keys), model


def _describe(err: dict[str, Any]) -> str:
    loc, model = _walk(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        explain = getattr(model, "unknown_key_problem", None)  # e.g. a key of another pruning method
        if problem := explain and explain(str(loc[-1])):
            return f"{key}: {problem}"
        valid = list(model.model_fields) if model is not None else []
        hint = did_you_mean(str(loc[-1]), valid, listing="valid keys here")
        return f"unknown key '{key}' ({hint})"
    if err["type"] == "union_tag_invalid":
        tag_key, ctx = err["ctx"]["discriminator"].strip("'"), err["ctx"]
        return f"{key}.{tag_key}: unknown value '{ctx['tag']}' (choose one of {ctx['expected_tags']})"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    shown = repr(err.get("input"))
    if len(shown) > 80:  # a whole pasted file as a value: the line stays a line
        shown = f"{shown[:60]}... ({len(shown):,} characters)"
    return f"{key}: {err['msg'].removeprefix('Value error, ')} (got {shown})"


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override '{text}' is not of the form key=value (e.g. train.max_steps=20)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ValueError(f"override '{text}' has an empty key")
    try:
        value = safe_load_bounded(raw) if raw.strip() else None
    except _YamlTooLarge as e:
        raise ValueError(f"override '{key.strip()}': {e}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> list[str]:
    """Set each ``a.b=value`` override into ``data`` in place; returns one problem per bad override."""
    problems = []
    for text in overrides:
        try:
            path, value = _parse_override(text)
        except ValueError as e:
            problems.append(str(e))
            continue
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override '{text}': '{'.'.join(path[: i + 1])}' is not a section")
                break
            node = child
        else:
            node[path[-1]] = value
    return problems


def validate_recipe(data: dict[str, Any], source: str) -> Recipe:
    """Validate a recipe mapping against the schema, the task and pruner registries.

    Raises :class:`RecipeError` listing every problem at once.
    """
    from movprune import pruners, tasks  # deferred: their checks import torch; the schema above does not

    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        # The names are checked too, so that a typo'd task or method is not hidden until the
        # schema errors are fixed.
        pruner = data.get("pruner")
        method = pruner.get("method") if isinstance(pruner, dict) else None
        # An unknown method, when a string, is reported by the registry (with a "did you mean").
        problems = [_describe(err) for err in e.errors()
                    if not (err["type"] == "union_tag_invalid" and isinstance(method, str))]
        if isinstance(data.get("task"), str):
            problems += tasks.check_name(data["task"])
        if isinstance(method, str):
            problems += pruners.check_name(method)
        raise RecipeError(source, problems) from None
    problems = tasks.check_task(recipe.task, recipe.dataset) + pruners.check_config(recipe.pruner)
    if not problems:
        problems = pruners.check_budget(recipe.pruner, recipe.train.max_steps)
    if problems:
        raise RecipeError(source, problems)
    return recipe


def read_recipe_data(path: str | Path) -> dict[str, Any]:
    """The recipe file's raw mapping (``yaml.safe_load``), before overrides and validation."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise RecipeError(source, ["recipe file not found (check the path; shipped recipes are under "
                                   "src/movprune/recipes/)"])
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(source, [f"the file is {size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,} "
                                   "(is this the right file?)"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(source, [f"byte {e.start}: not UTF-8 text ({e.reason}); save the recipe as "
                                   "UTF-8"]) from None
    try:
        data = safe_load_bounded(text)
    except _YamlTooLarge as e:
        raise RecipeError(source, [str(e)]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RecipeError(source, [f"{where}not valid YAML ({getattr(e, 'problem', e)})"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(source, ["the recipe must be a mapping of keys to values at the top level"])
    return data


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe with ``yaml.safe_load``, apply ``key=value`` overrides and validate it."""
    source = str(path)
    data = read_recipe_data(path)
    problems = apply_overrides(data, list(overrides))
    if problems:
        raise RecipeError(source, problems)
    return validate_recipe(data, source)
