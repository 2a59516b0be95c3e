"""The docs stay true to the code: the YAML reference lists every key `--dry-run` prints, and every
relative link in README.md and docs/ reaches a file."""

from __future__ import annotations

import re

import yaml

from conftest import REPO, run_cli


def _keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def _references() -> tuple[dict, dict]:
    """docs/recipes.md's YAML reference, and its block of each method's own pruner keys."""
    text = (REPO / "docs" / "recipes.md").read_text()
    reference, per_method = (yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)[:2])
    return reference, per_method


def test_the_yaml_reference_lists_every_key_dry_run_prints(write_recipe):
    reference, _ = _references()
    # Distillation on, so that its section is printed in full too.
    res = run_cli("run", str(write_recipe(distill={"teacher": "auto"})), "--dry-run")
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    assert _keys(printed) - _keys(reference) == set(), "keys --dry-run prints that docs/recipes.md omits"
    assert _keys(reference) - _keys(printed) == set(), "keys docs/recipes.md lists that no recipe has"


def test_relative_links_in_readme_and_docs_reach_a_file():
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []


def test_the_reference_gives_each_methods_own_keys_and_their_defaults(write_recipe):
    """The reference shows movement's pruner section; the block below it every method's own keys.
    Each method's resolved section is the shared keys plus exactly its own, at the defaults listed."""
    from movprune import pruners
    from movprune.recipe import load_recipe

    reference, per_method = _references()
    shared = set(reference["pruner"]) - set(per_method[reference["pruner"]["method"]])
    path = write_recipe()
    assert sorted(per_method) == sorted(pruners.method_names())
    for method, own in per_method.items():
        target = "pruner.remaining_pct=null" if method == "none" else "pruner.remaining_pct=10"
        printed = yaml.safe_load(load_recipe(path, [f"pruner.method={method}", target]).to_yaml())["pruner"]
        assert set(printed) == shared | set(own), method
        assert {k: printed[k] for k in own} == own, method
