"""The ``pruner:`` section of a recipe. It belongs to the pruners, which read it; the recipe above
composes it with the other sections.

Each method has its own config class holding the keys every method shares (:class:`BasePrunerConfig`)
plus its own, with their real defaults; :data:`PrunerConfig` is their union, told apart by
``method``. A key of another method is an error naming the methods that take it. No torch here:
the recipe's schema loads without it (``validate_recipe``'s method checks import the pruner
classes, and with them torch).
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, TypeAdapter, model_validator

from movprune.schema import StrictModel

#: The method of a ``pruner:`` section that names none.
DEFAULT_METHOD = "none"


class BasePrunerConfig(StrictModel):
    """Which weights to prune, how many to keep, and on what schedule: the keys every method has.

    A method's own key written as ``null`` takes the method's default; a null key of another method
    is ignored (files written before the per-method configs list every key, the unused ones null).
    """

    #: "module:class" of the method's :class:`~movprune.pruners.base.Pruner` (imported only when a
    #: run builds it): a method is registered once, by its config class in ``_CLASSES`` below.
    IMPLEMENTATION: ClassVar[str] = ""
    method: str
    remaining_pct: float | None = Field(
        default=None, gt=0, le=100,
        description="target % of encoder Linear weights kept at the end (the paper's remaining weights)",
    )
    initial_warmup: float = Field(default=0.1, ge=0, lt=1, description="fraction of steps kept dense")
    final_warmup: float = Field(default=0.2, ge=0, lt=1, description="fraction of final steps at the target")
    scope: Literal["local", "global"] = "local"
    pattern: Literal["unstructured", "block", "hybrid"] = Field(
        default="unstructured",
        description="what one score/importance decides: a weight, a block_shape block, or (hybrid) a whole "
                    "attention head / FFN neuron; see movprune.pruners.grouping")
    block_shape: tuple[int, int] | None = Field(
        default=None, description="[rows, cols] of a block, for pattern: block (e.g. [32, 32])")
    # Remedies for hard movement's collapse at short budgets (docs/methods.md#remedies-for-the-collapse).
    bias_correction: bool = Field(
        default=False,
        description="fold the removed weights' contribution at each layer's running input mean into its bias",
    )

    @model_validator(mode="before")
    @classmethod
    def _null_method_keys_are_unset(cls, data: Any) -> Any:
        return without_null_method_keys(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _warmups_leave_a_ramp(self) -> BasePrunerConfig:
        if self.initial_warmup + self.final_warmup >= 1:
            raise ValueError(
                f"initial_warmup ({self.initial_warmup}) + final_warmup ({self.final_warmup}) must be "
                "below 1 so that the sparsity ramp has steps left"
            )
        return self

    @model_validator(mode="after")
    def _block_shape_with_block_pattern(self) -> BasePrunerConfig:
        if self.pattern == "block" and self.block_shape is None:
            raise ValueError("pattern 'block' needs block_shape: [rows, cols] (e.g. pruner.block_shape=[32,32])")
        if self.pattern != "block" and self.block_shape is not None:
            raise ValueError(f"block_shape applies to pattern 'block' only (pattern is '{self.pattern}'); "
                             "remove it or set pruner.pattern=block")
        if self.block_shape is not None and min(self.block_shape) < 1:
            raise ValueError(f"block_shape {list(self.block_shape)}: rows and cols must be at least 1")
        return self

    @classmethod
    def unknown_key_problem(cls, key: str) -> str | None:
        takers = methods_taking(key)
        if not takers:
            return None
        method = cls.model_fields["method"].default
        return (f"method '{method}' has no key {key}; it is a key of {', '.join(takers)} (remove it or "
                f"override it with pruner.{key}=null, or set pruner.method to "
                f"{'that method' if len(takers) == 1 else 'one of those'})")


class NoneConfig(BasePrunerConfig):
    """``none``: dense fine-tuning."""

    IMPLEMENTATION: ClassVar[str] = "movprune.pruners.none:NoPruner"
    method: Literal["none"] = "none"


class MagnitudeConfig(BasePrunerConfig):
    """``magnitude``: no keys of its own."""

    IMPLEMENTATION: ClassVar[str] = "movprune.pruners.magnitude:MagnitudePruner"
    method: Literal["magnitude"] = "magnitude"


class MovementConfig(BasePrunerConfig):
    """``movement``: learned scores, top-k on the cubic schedule."""

    IMPLEMENTATION: ClassVar[str] = "movprune.pruners.movement:MovementPruner"
    method: Literal["movement"] = "movement"
    scores_lr: float = Field(default=1e-2, gt=0, description="learning rate of the scores")
    scores_init: float = Field(default=0.0, description="initial value of every score")
    scores_init_from: Literal["constant", "magnitude"] = Field(
        default="constant", description="scores start at scores_init (constant) or at |W| / mean |W| per matrix",
    )


class SoftMovementConfig(BasePrunerConfig):
    """``soft_movement``: a threshold on sigmoid scores and an L1 penalty on them."""

    #: The paper's fixed λ, the example given when neither remaining_pct nor lambda_final is set.
    PAPER_LAMBDA_FINAL: ClassVar[float] = 400.0
    IMPLEMENTATION: ClassVar[str] = "movprune.pruners.soft_movement:SoftMovementPruner"
    method: Literal["soft_movement"] = "soft_movement"
    scores_lr: float = Field(default=1e-2, gt=0, description="learning rate of the scores")
    scores_init: float = Field(default=0.0, description="initial value of every score")
    lambda_final: float | None = Field(
        default=None, ge=0,
        description="the paper's fixed λ, without remaining_pct (with it, a controller sets λ)")
    sigmoid_threshold_initial: float = Field(default=0.0, ge=0, le=1, description="τ at the start of the ramp")
    sigmoid_threshold_final: float = Field(default=0.1, ge=0, le=1, description="τ at its end")


class L0Config(BasePrunerConfig):
    """``l0``: hard-concrete gates with an expected-L0 penalty."""

    PAPER_LAMBDA_FINAL: ClassVar[float] = 125.0
    IMPLEMENTATION: ClassVar[str] = "movprune.pruners.l0:L0Pruner"
    method: Literal["l0"] = "l0"
    scores_lr: float = Field(default=1e-1, gt=0, description="learning rate of the log-alphas")
    scores_init: float = Field(default=math.log(0.9 / 0.1), description="initial log-alpha (every gate ~90% open)")
    lambda_final: float | None = Field(
        default=None, ge=0,
        description="the paper's fixed λ, without remaining_pct (with it, a controller sets λ)")


class SensitivityConfig(BasePrunerConfig):
    """``sensitivity``: top-k of PLATON's uncertainty-weighted sensitivity."""

    IMPLEMENTATION: ClassVar[str] = "movprune.pruners.sensitivity:SensitivityPruner"
    method: Literal["sensitivity"] = "sensitivity"
    sensitivity_beta1: float = Field(default=0.85, ge=0, lt=1, description="EMA of |W g|")
    sensitivity_beta2: float = Field(default=0.95, ge=0, lt=1, description="EMA of its uncertainty")


class FisherConfig(BasePrunerConfig):
    """``fisher``: whole heads and FFN neurons chosen in one shot from the Fisher information of their
    masks on calibration examples, no training needed (Kwon et al. 2022)."""

    IMPLEMENTATION: ClassVar[str] = "movprune.pruners.fisher:FisherPruner"
    method: Literal["fisher"] = "fisher"
    pattern: Literal["unstructured", "block", "hybrid"] = Field(
        default="hybrid", description="fisher prunes whole attention heads and FFN neurons: hybrid only")
    calibration_samples: int = Field(
        default=2048, gt=0, description="training examples whose mask gradients make the Fisher information")
    rearrange: bool = Field(
        default=True, description="improve each layer's mask by greedy swaps on its block of the Fisher matrix")
    rescale: bool = Field(
        default=True, description="least-squares scales of the kept heads and neurons, layer by layer, "
                                  "against the unpruned model's outputs (folded into the weights)")
    flops_pct: float | None = Field(
        default=None, gt=0, le=100,
        description="also keep at most this % of the encoder's FLOPs at flops_seq_tokens tokens per example")
    flops_seq_tokens: int = Field(default=128, gt=0, description="tokens per example the FLOPs budget counts")
    latency_table: str | None = Field(
        default=None, description="a latency lookup table (JSON, benchmarks/latency_table.py) measured for this "
                                  "model on the runtime that will serve it; the run records the predicted latency")
    latency_ms: float | None = Field(
        default=None, gt=0, description="also keep the latency the table predicts, at the table's batch size and "
                                        "sequence length, at most this many milliseconds")
    rescale_damping: float = Field(
        default=1e-3, ge=0, description="ridge added to the least-squares normal equations, relative to "
                                        "their mean diagonal")


_CLASSES = (NoneConfig, MagnitudeConfig, MovementConfig, SoftMovementConfig, L0Config, SensitivityConfig,
            FisherConfig)
#: method name -> its config class: the registry of methods (``movprune.pruners`` builds from it).
CONFIGS: dict[str, type[BasePrunerConfig]] = {c.model_fields["method"].default: c for c in _CLASSES}
#: Keys some method has beyond the shared ones.
METHOD_SPECIFIC_KEYS = frozenset(k for c in _CLASSES for k in c.model_fields) - set(BasePrunerConfig.model_fields)


def without_null_method_keys(section: dict[str, Any]) -> dict[str, Any]:
    """A ``pruner:`` mapping without its method-specific keys set to null, which say nothing: the
    method's default, or a key of another method in a file written before the per-method configs."""
    return {k: v for k, v in section.items() if not (v is None and k in METHOD_SPECIFIC_KEYS)}


def _method_defaults_to_none(data: Any) -> Any:
    if isinstance(data, dict) and "method" not in data:
        return {**data, "method": DEFAULT_METHOD}
    return data


#: A recipe's ``pruner:`` section: the config class of its ``method`` (``none`` when unnamed).
PrunerConfig = Annotated[Union[NoneConfig, MagnitudeConfig, MovementConfig, SoftMovementConfig, L0Config,  # noqa: UP007
                               SensitivityConfig, FisherConfig],
                         Field(discriminator="method"), BeforeValidator(_method_defaults_to_none)]


@functools.cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(PrunerConfig)


def pruner_config(**fields: Any) -> BasePrunerConfig:
    """The config of ``fields["method"]`` (``none`` when absent), validated; raises pydantic's
    ``ValidationError`` like a recipe would."""
    return _adapter().validate_python(fields)


def methods_taking(key: str) -> list[str]:
    """The methods whose config has ``key`` (all of them for a shared key; none for an unknown one)."""
    return [m for m, c in CONFIGS.items() if key in c.model_fields]
