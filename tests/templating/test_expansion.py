"""Values that repeat one another (YAML aliases, `[row] * n`) cannot blow up a render.

A few lines of YAML with aliases stand for billions of values ("billion laughs"): loading
them is cheap, but printing, copying or serializing them is not, and str() of such a value
runs in C, holding the GIL. Such documents are refused when loaded; serializers count what
they would write against the render's output limit.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from wodmail.errors import TemplateError
from wodmail.templating.renderer import Renderer, load_vars_file
from wodmail.templating.varsfiles import MAX_YAML_VALUES

NAME = "WKSHP-X/2-Creds.ipynb"


def _laughs(levels: int) -> str:
    names = "abcdefghij"[:levels]
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]"
              for previous, name in zip(names, names[1:], strict=False)]
    return "\n".join(lines) + "\n"


def test_from_yaml_refuses_a_billion_laughs_at_once():
    renderer = Renderer({"doc": _laughs(9)})
    started = time.monotonic()
    with pytest.raises(TemplateError) as failure:
        renderer.render("{{ doc | from_yaml | to_json | length }}", NAME)
    print(f"refused after {time.monotonic() - started:.3f} s")
    assert "from_yaml: the document expands to" in str(failure.value)
    assert f"over the limit of {MAX_YAML_VALUES}" in str(failure.value)


def test_serializing_a_value_that_repeats_one_list_stays_within_the_limits():
    renderer = Renderer({}, max_output_chars=100_000)
    template = "{% set row = [1] * 1000 %}{% set grid = [row] * 1000 %}{{ grid | to_json }}"
    with pytest.raises(TemplateError, match="holds more than 100000 items"):
        renderer.render(template, NAME)


def test_from_yaml_keeps_ordinary_aliases():
    renderer = Renderer({"doc": "base: &b {port: 80}\nweb: *b\n"})
    assert renderer.render("{{ doc | from_yaml | to_json }}", NAME) == (
        '{"base": {"port": 80}, "web": {"port": 80}}')


def test_a_variables_file_that_expands_too_far_is_refused_naming_it(tmp_path: Path):
    path = tmp_path / "variables_WKSHP-X.yml"
    path.write_text(_laughs(9))
    with pytest.raises(TemplateError) as failure:
        load_vars_file(path)
    assert str(failure.value).startswith(f"{path}: invalid YAML: the document expands to")
