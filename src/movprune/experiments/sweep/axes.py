"""A sweep's axes from the command line: comma-separated remaining-weight levels, methods, seeds,
and ``--grid KEY=V1,V2,...`` over any recipe key that changes the numbers."""

from __future__ import annotations

from typing import Any

from movprune.errors import MovpruneError, RecipeError

#: One ``--grid`` axis: a dotted recipe key and its values, in the order given.
GridAxis = tuple[str, list[Any]]
_OPENING, _CLOSING = "[{", "]}"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def parse_remaining_pcts(text: str) -> list[float]:
    """``"3,10,15"`` -> ``[3.0, 10.0, 15.0]``: % of encoder weights kept, each in (0, 100]."""
    values, problems = [], []
    for part in _split(text):
        try:
            value = float(part.rstrip("%"))
        except ValueError:
            problems.append(f"'{part}' is not a number (give remaining weights in %, e.g. 3,10,15)")
            continue
        if not 0 < value <= 100:
            problems.append(f"{part}: remaining weights must be in (0, 100] % (3 means keep 3%, i.e. "
                            "97% sparse)")
            continue
        values.append(value)
    if not values and not problems:
        problems.append("no value given (e.g. --sparsity 3,10,15 for 3%, 10% and 15% remaining)")
    if problems:
        raise RecipeError("--sparsity", problems)
    return _unique(values)


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``."""
    values, problems = [], []
    for part in _split(text):
        try:
            values.append(int(part))
        except ValueError:
            problems.append(f"'{part}' is not an integer seed")
    if not values and not problems:
        problems.append("no seed given (e.g. --seeds 1,2,3)")
    if problems:
        raise RecipeError("--seeds", problems)
    return _unique(values)


def parse_axes(remaining_pcts: str | None, methods: str | None,
               seeds: str | None) -> tuple[list[float] | None, list[str] | None, list[int] | None]:
    """Parse the three comma-separated axes (``None`` = the recipe's value), reporting every
    problem of all three at once as one :class:`MovpruneError`."""
    parsed, problems = [], []
    for text, parse in ((remaining_pcts, parse_remaining_pcts), (methods, parse_methods),
                        (seeds, parse_seeds)):
        try:
            parsed.append(parse(text) if text is not None else None)
        except RecipeError as e:
            problems.append(str(e))
            parsed.append(None)
    if problems:
        raise MovpruneError("\n".join(problems))
    return parsed[0], parsed[1], parsed[2]


def parse_methods(text: str) -> list[str]:
    """``"magnitude,movement"`` -> ``["magnitude", "movement"]`` (checked against the registry
    when the sweep is planned)."""
    values = _unique(_split(text))
    if not values:
        raise RecipeError("--pruners", ["no pruning method given (e.g. --pruners magnitude,movement)"])
    return values


def split_grid_values(text: str) -> list[str]:
    """``"300,1000"`` -> ``["300", "1000"]``; a comma inside brackets, braces or quotes does not split
    (``"[32,32],[64,64]"`` -> ``["[32,32]", "[64,64]"]``)."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPENING:
            depth += 1
        elif ch in _CLOSING:
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def parse_grid(texts: list[str]) -> list[GridAxis]:
    """Each ``--grid KEY=V1,V2,...`` as ``(key, values)``; values are read as an override's value
    (YAML: ``300`` an integer, ``true`` a flag, ``[32,32]`` a list, else the text). A key must change
    the numbers (:func:`movprune.identity.sweepable_problem`). Raises :class:`RecipeError` naming every
    bad axis."""
    from movprune import identity
    from movprune.recipe import _parse_override

    axes: list[GridAxis] = []
    problems = []
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"'{text}' is not KEY=V1,V2,... (e.g. --grid train.max_steps=300,1000)")
            continue
        problem = identity.sweepable_problem(key)
        if problem:
            problems.append(f"{key}: cannot be swept: {problem}")
            continue
        if any(key == k for k, _ in axes):
            problems.append(f"{key}: given twice; list all its values in one --grid {key}=V1,V2,...")
            continue
        parts = split_grid_values(raw)
        if any(not p for p in parts):
            problems.append(f"{key}: an empty value in '{raw}' (give KEY=V1,V2,...; a list value keeps its commas "
                            "inside brackets: [32,32],[64,64])")
            continue
        values = _unique_values([_parse_override(f"{key}={p}")[1] for p in parts])
        axes.append((key, values))
    if problems:
        raise RecipeError("--grid", problems)
    return axes


def _unique_values(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out
