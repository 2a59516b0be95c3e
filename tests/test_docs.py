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


def test_the_yaml_reference_lists_every_key_dry_run_prints(write_recipe):
    text = (REPO / "docs" / "recipes.md").read_text()
    reference = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
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
