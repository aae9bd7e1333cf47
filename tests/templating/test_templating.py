"""Rendering rules of wodmail.templating.renderer (Ansible `template` compatibility, LIFECYCLE.md).

The differential test (test_ansible_differential.py) checks the same rules against
ansible-core itself; these pin each rule down on its own, with readable failures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wodmail.errors import TemplateError
from wodmail.templating.renderer import (
    Renderer,
    layer_variables,
    load_vars_file,
    looks_like_template,
)

GROUP_VARS = {
    "WODBEFQDN": "wod-be.example.org",
    "WODBEAPIURL": "http://{{ WODBEFQDN }}:8000",
    "WODBEAPIV1": "{{ WODBEAPIURL }}/v1",
    "STUDDIR": "{{ ansible_env.STUDDIR }}",
    "SCRIPTDIR": "{{ WODBEDIR }}/scripts",
    "IP-WKSHP-Docker101": "10.0.0.5",
    "HTTPPORT-WKSHP-Docker101": 14151,
    "PORT": "{{ hostvars[inventory_hostname]['HTTPPORT-WKSHP-Docker101'] }}",
    "NOTHING": None,
    "YES": True,
    "SETTINGS": {"api": "{{ WODBEAPIURL }}", "hosts": ["a.{{ WODBEFQDN }}", 2]},
}


def render(text: str, variables: dict | None = None, name: str = "WKSHP-X/f.sh") -> str:
    return Renderer(GROUP_VARS if variables is None else variables).render(text, name)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ WODBEFQDN }}", "wod-be.example.org"),
        ("{{ WODBEFQDN }}\n", "wod-be.example.org\n"),
        ("{{ WODBEFQDN }}\n\n", "wod-be.example.org\n\n"),
        ("{{ WODBEFQDN }}\n\n\n", "wod-be.example.org\n\n\n"),
        ("{% if YES %}\nyes\n{% endif %}\n", "yes\n"),
        ("{% if YES %}\nyes\n{% endif %}", "yes\n"),
    ],
)
def test_trailing_newlines_are_kept_exactly(source: str, expected: str) -> None:
    assert render(source) == expected


def test_crlf_becomes_lf_in_a_template() -> None:
    assert render("a {{ YES }}\r\nb\rc\r\n") == "a True\nb\nc\n"


def test_a_file_without_template_syntax_is_returned_unchanged_crlf_and_all() -> None:
    text = "\ufeffecho 'no template' ${HOME}\r\n\r\n"
    assert not looks_like_template(text)
    assert render(text) == text


def test_bom_tabs_nbsp_and_utf8_are_kept() -> None:
    source = "\ufeff\tnom:\u00a0{{ WODBEFQDN }} — é 日本 🚀\n"
    assert render(source) == "\ufeff\tnom:\u00a0wod-be.example.org — é 日本 🚀\n"


def test_none_renders_empty_and_true_as_true() -> None:
    assert render("[{{ NOTHING }}] [{{ YES }}] [{{ NOTHING }}{{ YES }}]") == "[] [True] [True]"


def test_escaped_braces_and_raw_blocks_pass_go_templates_through() -> None:
    source = (
        "docker ps --format '{{ '{{' }}.Names{{ '}}' }}'\n"
        "{% raw %}kubectl -o go-template='{{.metadata.name}}' {% if %}{% endraw %}\n"
    )
    assert render(source) == (
        "docker ps --format '{{.Names}}'\nkubectl -o go-template='{{.metadata.name}}' {% if %}\n"
    )


def test_values_are_expanded_recursively_when_used() -> None:
    assert render("{{ WODBEAPIV1 }}") == "http://wod-be.example.org:8000/v1"


def test_values_inside_dicts_and_lists_are_expanded_when_used() -> None:
    source = "{{ SETTINGS.api }} {{ SETTINGS['hosts'][0] }} {{ SETTINGS.hosts | length }}"
    assert render(source) == "http://wod-be.example.org:8000 a.wod-be.example.org 2"


def test_a_single_expression_value_keeps_its_type() -> None:
    assert render("{{ PORT + 6 }}") == "14157"


def test_an_unused_value_that_cannot_be_expanded_is_no_error() -> None:
    # STUDDIR and SCRIPTDIR refer to variables that only exist inside Ansible.
    assert render("{{ WODBEFQDN }}") == "wod-be.example.org"


def test_a_value_that_cannot_be_expanded_counts_as_undefined() -> None:
    source = "{{ 'yes' if STUDDIR is defined else 'no' }} {{ SCRIPTDIR | default('/opt') }}"
    assert render(source) == "no /opt"


def test_non_identifier_keys_through_hostvars_and_vars() -> None:
    source = (
        "%login {{ hostvars[inventory_hostname]['IP-WKSHP-Docker101'] }}"
        " {{ vars['HTTPPORT-WKSHP-Docker101'] }}"
    )
    assert render(source) == "%login 10.0.0.5 14151"


@pytest.mark.parametrize(("mode", "expected"), [("CHLG", "challenge"), ("WKSHP", "workshop")])
def test_modews_selects_the_challenge_text(mode: str, expected: str) -> None:
    source = "{% if MODEWS == 'CHLG' %}challenge{% else %}workshop{% endif %}"
    assert render(source, {"MODEWS": mode}) == expected


def test_trim_blocks_removes_the_newline_after_a_block_tag_in_a_script() -> None:
    source = "#!/bin/bash\n{% if YES %}\necho yes\n{% endif %}\nexit 0\n"
    assert render(source) == "#!/bin/bash\necho yes\nexit 0\n"


def test_trim_blocks_changes_nothing_in_a_json_notebook_string() -> None:
    source = '    "{% if YES %}\\n",\n    "echo yes\\n",\n    "{% endif %}\\n",\n'
    assert render(source) == '    "\\n",\n    "echo yes\\n",\n    "\\n",\n'


def test_whitespace_control_and_lstrip_blocks_off() -> None:
    assert render("a\n  {%- if YES -%}  b  {%- endif %}\n  {% if YES %}c{% endif %}") == "ab  c"


def test_shell_array_length_is_a_syntax_error_naming_file_and_line() -> None:
    with pytest.raises(TemplateError) as caught:
        render('#!/bin/bash\narr=(a b)\necho "${#arr[@]} items"\n', name="WKSHP-X/count.sh")
    assert caught.value.file == "WKSHP-X/count.sh"
    assert "line 3" in str(caught.value)
    assert "Missing end of comment tag" in str(caught.value)


def test_undefined_variable_error_names_the_file_and_the_variable() -> None:
    with pytest.raises(TemplateError) as caught:
        render("line one\n{{ FOO }}\n", name="WKSHP-X/1-Intro.ipynb")
    assert str(caught.value) == "WKSHP-X/1-Intro.ipynb: undefined variable 'FOO' (line 2)"


def test_undefined_variable_in_a_condition_is_an_error() -> None:
    # A real notebook tested `MODESW`: under Ansible that fails the CREATE too.
    with pytest.raises(TemplateError, match="undefined variable 'MODESW'"):
        render("{% if MODESW == 'CHLG' %}x{% endif %}")


def test_undefined_variable_inside_a_value_names_both() -> None:
    variables = {"URL": "http://{{ FQDN }}:8000"}
    with pytest.raises(TemplateError) as caught:
        render("{{ URL }}", variables)
    assert "undefined variable 'FQDN'" in str(caught.value)
    assert "'URL'" in str(caught.value)


def test_missing_hostvars_key_is_an_undefined_variable() -> None:
    with pytest.raises(TemplateError, match="undefined variable 'IP-WKSHP-Nope'"):
        render("{{ hostvars[inventory_hostname]['IP-WKSHP-Nope'] }}")


def test_a_loop_between_values_is_reported() -> None:
    with pytest.raises(TemplateError, match=r"recursive loop.*A -> B -> A"):
        render("{{ A }}", {"A": "x{{ B }}", "B": "y{{ A }}"})


def test_mandatory_filter_names_the_variable() -> None:
    with pytest.raises(TemplateError, match="mandatory variable 'TOKEN' not defined"):
        render("{{ TOKEN | mandatory }}")


def test_sandbox_refuses_python_internals() -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        render("{{ WODBEFQDN.__class__.__mro__ }}")


def test_ansible_filters_used_by_workshops() -> None:
    source = (
        "{{ WODBEFQDN | regex_replace('[.]example[.]org$', '') }}|{{ 'a b' | quote }}"
        "|{{ 'pw' | b64encode }}|{{ 'yes' | bool }}|{{ SETTINGS.hosts | to_json }}"
        "|{{ {'k': 'v'} | to_yaml }}"
    )
    assert render(source) == "wod-be|'a b'|cHc=|True|[\"a.wod-be.example.org\", 2]|{k: v}\n"


def test_lookup_vars_reaches_a_computed_name() -> None:
    assert render("{{ lookup('vars', 'IP-' + 'WKSHP-Docker101') }}") == "10.0.0.5"


def test_jinja2_override_header_applies_to_the_file() -> None:
    assert render("#jinja2: trim_blocks: False\n{% if YES %}\nyes\n{% endif %}\n") == "\nyes\n"


def test_undefined_variables_lists_every_one_not_only_the_first() -> None:
    variables = {**GROUP_VARS, "URL": "http://{{ FQDN }}:{{ PORTNUM }}"}
    source = (
        "{{ FOO }} {{ BAR }} {{ FOO }} {{ URL }}"
        " {{ hostvars[inventory_hostname]['IP-WKSHP-Nope'] }}"
        " {{ GUARDED | default('x') }} {% if OPTIONAL is defined %}{{ OPTIONAL }}{% endif %}"
        " {{ WODBEAPIURL }}"
    )
    found = Renderer(variables).undefined_variables(source, "WKSHP-X/f.ipynb")
    assert found == {"FOO", "BAR", "FQDN", "PORTNUM", "IP-WKSHP-Nope"}


def test_undefined_variables_reports_a_value_that_is_broken_not_undefined() -> None:
    renderer = Renderer({"A": "x{{ B }}", "B": "y{{ A }}"})
    with pytest.raises(TemplateError, match="recursive loop"):
        renderer.undefined_variables("{{ FOO }} {{ A }}", "WKSHP-X/f.ipynb")


def test_a_file_that_is_one_expression_keeps_its_newline() -> None:
    assert render("{{ PORT }}\n") == "14151\n"


def test_include_is_refused_with_a_clear_error() -> None:
    with pytest.raises(TemplateError, match="include/import of 'other.j2' is not supported"):
        render("{% include 'other.j2' %}")


def test_undefined_variables_reports_a_syntax_error() -> None:
    with pytest.raises(TemplateError, match="Missing end of comment tag"):
        Renderer({}).undefined_variables("echo ${#arr[@]}\n", "WKSHP-X/count.sh")


def test_load_vars_file_keeps_unsafe_values_literal(tmp_path: Path) -> None:
    path = tmp_path / "variables_WKSHP-X.yml"
    path.write_text('RAW: !unsafe "{{ not expanded }}"\nPORT: 8080\nIP-WKSHP-X: 1.2.3.4\n')
    variables = load_vars_file(path)
    assert variables["PORT"] == 8080
    assert render("{{ RAW }} {{ vars['IP-WKSHP-X'] }}", variables) == "{{ not expanded }} 1.2.3.4"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("- a\n- b\n", "expected a mapping of variables, found a list"),
        ("A: [unclosed\n", "invalid YAML"),
        ("A: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n", "Vault"),
        ("1: one\n", "variable names must be strings"),
    ],
)
def test_load_vars_file_rejects_bad_files_naming_them(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "variables_WKSHP-X.yml"
    path.write_text(content)
    with pytest.raises(TemplateError, match=problem) as caught:
        load_vars_file(path)
    assert caught.value.file == str(path)


def test_an_empty_vars_file_has_no_variables(tmp_path: Path) -> None:
    path = tmp_path / "variables_WKSHP-X.yml"
    path.write_text("# nothing yet\n")
    assert load_vars_file(path) == {}


def test_layer_variables_later_layers_win(tmp_path: Path) -> None:
    public = tmp_path / "public.yml"
    public.write_text("A: public\nB: public\nC: public\nSTDID: from-file\n")
    private = tmp_path / "private.yml"
    private.write_text("B: private\nC: private\n")
    variables = layer_variables(
        {"A": "config", "Z": "config"},
        public,
        private,
        {"C": "student"},
        stdid=12,
        workshop_ws="WKSHP-Docker101",
        challenge_w="CHLG-Docker101",
        mode="CHLG",
        password="pw",
    )
    assert {key: variables[key] for key in "ABCZ"} == {
        "A": "public",
        "B": "private",
        "C": "student",
        "Z": "config",
    }
    assert variables["STDID"] == "12"  # a string, as `ansible-playbook -e STDID=12` gave
    assert variables["WORKSHOP"] == "WKSHP-Docker101"
    assert variables["CHALLENGE"] == "CHLG-Docker101"
    assert variables["MODEWS"] == "CHLG"
    assert variables["PASSSTU"] == "pw"


def test_layer_variables_skips_missing_files_and_defines_passstu_only_when_given(
    tmp_path: Path,
) -> None:
    variables = layer_variables(
        {},
        tmp_path / "absent.yml",
        None,
        {},
        stdid=1,
        workshop_ws="WKSHP-X",
        challenge_w="WKSHP-X",
        mode="WKSHP",
        password=None,
    )
    assert "PASSSTU" not in variables
    with pytest.raises(TemplateError, match="undefined variable 'PASSSTU'"):
        render("{{ PASSSTU }}", variables)


def test_layer_variables_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        layer_variables(
            {},
            None,
            None,
            {},
            stdid=1,
            workshop_ws="WKSHP-X",
            challenge_w="WKSHP-X",
            mode="TEST",
            password=None,
        )


# --- resource limits (issue 8 item 7) ------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ ('a'*100000000)|length }}",
         "'*' would build a value of 100000000 characters: over the limit of 1000000"),
        ("{{ 'a'.ljust(100000000) }}", "an argument asking for a value of 100000000"),
        ("{{ 'x'|center(100000000) }}", "an argument asking for a value of 100000000"),
        ("{% set s = 'a'*600000 %}{{ s ~ s }}", "'~' would build a string of 1200000"),
        ("{% set s = 'a'*600000 %}{{ s + s }}", "'+' would build a value of 1200000"),
        ("{{ '%0100000000d' % 1 }}", "'%' format with a width of 10 million or more"),
        ("{{ 10 ** 100000000 }}", "'**' would build a number"),
        ("{% for i in range(3000) %}{{ 'x' * 500 }}{% endfor %}",
         "template output of 1000500 characters: over the limit of 1000000"),
        ("{% set r = range(100000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}",
         "rendering took longer than the 1 s limit"),
    ],
)
def test_templates_cannot_exhaust_memory_or_time(template, reason):
    renderer = Renderer({}, max_output_chars=1_000_000, time_limit_seconds=1)
    with pytest.raises(TemplateError) as failure:
        renderer.render(template, "WKSHP-X/bomb.ipynb")
    assert reason in str(failure.value)
    assert str(failure.value).startswith("WKSHP-X/bomb.ipynb: ")


def test_a_huge_value_fails_where_it_is_used():
    renderer = Renderer({"big": "{{ 'a' * 100000000 }}"}, max_output_chars=1_000_000)
    with pytest.raises(TemplateError, match="in the value of 'big'"):
        renderer.render("{{ big|length }}", "f")


def test_templates_within_the_limits_render_unchanged():
    renderer = Renderer({"x": "abc", "n": 12345678901234},
                        max_output_chars=1_000_000, time_limit_seconds=1)
    text = ("{{ x ~ 'y' }} {{ 1 + 2 }} {% for i in range(3) %}{{ i }}{% endfor %} "
            "{{ '%05d'|format(3) }} {{ 'ab' * 3 }} {{ '%d'|format(n) }} {{ x|center(7) }}\n")
    assert renderer.render(text, "f") == "abcy 3 012 00003 ababab 12345678901234   abc  \n"
