"""A sweep's axes from the command line: comma-separated remaining-weight levels, methods, seeds."""

from __future__ import annotations

from movprune.errors import MovpruneError, RecipeError


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
