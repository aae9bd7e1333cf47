"""Workshop records as the real API-DB and real notebooks repositories have them: string
flags, `"compile": "false"`, missing or odd ranges, wod.yml files YAML cannot read whole."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import yaml

from support.e2e import Backend2E
from support.paths import FIXTURES
from wodmail import cli
from wodmail.config import load_config
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, make_sandbox
from wodmail.errors import ConfigurationError
from wodmail.journal.jobs import JobState
from wodmail.journal.store import Arrival, Journal
from wodmail.lifecycle.workshop import local_workshop
from wodmail.orders import Mode, Order, Verb
from wodmail.peers.portal import PortalWorkshop

ODD = FIXTURES / "odd-wodyml"


def record(**fields: object) -> PortalWorkshop:
    return PortalWorkshop.model_validate({"id": 7, "notebook": "WKSHP-X", **fields})


@pytest.mark.parametrize(
    ("value", "meant"),
    [(True, True), ("true", True), (False, False), ("false", False), ("True", False),
     ("", False), (None, False), ("yes", False), (1, False)],
)
def test_flags_mean_what_the_procmail_api_tests_meant(value, meant):
    for flag in ("reset", "varpass", "ldap", "monoappliance", "multiappliance"):
        assert getattr(record(**{flag: value}), flag) is meant


@pytest.mark.parametrize(
    ("value", "names"),
    [("false", ()), ("true", ()), ("True", ()), ("", ()), (None, ()), (False, ()),
     (True, ()), ("null", ()), ("a.sh", ("a.sh",)), ("a.sh, b.sh,", ("a.sh", "b.sh")),
     (["a.sh", "false"], ("a.sh",))],
)
def test_compile_holds_script_names_only_when_it_names_scripts(value, names):
    assert record(compile=value).compile == names


@pytest.mark.parametrize(
    ("value", "span"),
    [([1, 6], (1, 6)), (["1981-1985"], (1981, 1985)), (["3", "9"], (3, 9)), ("4-8", (4, 8)),
     (None, None), ([], None)],
)
def test_ranges_as_people_type_them(value, span):
    assert record(range=value).range == span
    assert record(range=value).range_error is None


def test_a_missing_range_is_no_range():
    assert record().range is None and record().range_error is None


def config_for(tmp_path: Path, notebooks: Path) -> Path:
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump({"notebooks": {"public": str(notebooks)},
                                    "state_dir": str(tmp_path / "state"),
                                    "students": {"min": 1, "max": 10}}))
    return path


@pytest.mark.parametrize(
    "workshop", ["WKSHP-Tab101", "WKSHP-Dash101", "WKSHP-Strings101", "WKSHP-Bare101",
                 "WKSHP-Junk101"],
)
def test_odd_wod_yml_files_render(tmp_path, capsys, workshop):
    config = config_for(tmp_path, ODD)
    assert cli.main(["render", workshop, "--student", "3", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert f"{workshop} renders cleanly for student 3" in captured.out
    for line in captured.err.splitlines():
        assert line.startswith("warning: ") and "wod.yml: field " in line, line


def test_a_field_yaml_cannot_read_is_a_one_line_warning_naming_file_and_field(tmp_path, capsys):
    config = config_for(tmp_path, ODD)
    assert cli.main(["render", "WKSHP-Tab101", "--student", "3", "--config", str(config)]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        f"warning: {ODD}/WKSHP-Tab101/wod.yml: field replayLink (line 12) cannot be parsed: "
        "found character '\\t' that cannot start any token; ignored"
    ]


def test_fields_that_parse_are_kept_when_another_does_not(tmp_path):
    config = load_config(config_for(tmp_path, ODD))
    workshop = local_workshop(config, "WKSHP-Tab101", "WKSHP-Tab101", "WKSHP")
    assert workshop.record.range == (64, 69)
    assert workshop.record.name == "Tab 101" and workshop.record.active is True


def test_strings_flags_and_bad_informative_fields_in_wod_yml(tmp_path):
    config = load_config(config_for(tmp_path, ODD))
    workshop = local_workshop(config, "WKSHP-Strings101", "WKSHP-Strings101", "WKSHP")
    rec = workshop.record
    assert (rec.varpass, rec.reset, rec.ldap, rec.compile, rec.range) == (
        True, False, False, (), (3, 9))
    assert workshop.warnings == (
        f"{ODD}/WKSHP-Strings101/wod.yml: field capacity ignored: Input should be a valid "
        "integer, unable to parse string as an integer",
    )


def test_a_needed_field_that_cannot_be_read_fails_in_one_line(tmp_path, capsys):
    config = config_for(tmp_path, ODD)
    assert cli.main(["render", "WKSHP-TabCompile101", "--student", "3",
                     "--config", str(config)]) != 0
    [line] = capsys.readouterr().err.strip().split("\n")  # one line, naming file and field
    assert line == (f"wodmail: {ODD}/WKSHP-TabCompile101/wod.yml: field compile (line 3) cannot be "
                      "parsed: found character '\\t' that cannot start any token")


def test_an_unusable_range_fails_only_an_order_that_needs_it(tmp_path):
    config = load_config(config_for(tmp_path, ODD))
    workshop = local_workshop(config, "WKSHP-Junk101", "WKSHP-Junk101", "WKSHP")
    assert workshop.record.range is None  # loading it is fine
    with pytest.raises(ConfigurationError) as caught:
        workshop.range_min  # noqa: B018  (a multiappliance target needs it)
    assert str(caught.value) == (
        "workshop WKSHP-Junk101 (wod.yml): range ['a', 'b', 'c'] is not [min, max], "
        "and this order needs its range"
    )


# -- the real API-DB's JSON through a CREATE -------------------------------------------------

# A workshop as `GET /api/workshops` of a seeded wod-api-db answers it: flags from VARCHAR
# columns, `compile` the string "false" even after `PUT {"compile": false}`, no range.
API_DB_WORKSHOP = {
    "id": 1, "name": "Sample workshop", "notebook": SAMPLE_WORKSHOP,
    "description": "A sample.", "capacity": 10, "priority": 1,
    "reset": "false", "varpass": "false", "ldap": "false", "monoappliance": "false",
    "multiappliance": "false", "beta": "false", "active": "true", "compile": "false",
    "sessionId": None, "sessionType": "Workshops-on-Demand", "location": "backend.example.org",
    "avatar": "/img/x.png", "role": "Architect", "preRequisite": None,
    "replayLink": "https://example.org/replay", "workshopImg": None, "badgeImg": "WOD-Badge",
    "replayId": 9, "category": ["Open Source"], "alternateLocation": [], "duration": 2,
    "presenter": "Someone", "createdAt": "2026-11-01T10:00:00.000Z",
    "updatedAt": "2026-11-01T10:00:00.000Z",
}


async def test_a_create_on_the_real_api_db_json_ends_done(tmp_path):
    box = make_sandbox(tmp_path / "sandbox", students=range(1, 4), base_id=100)
    box.portal.replace_workshop(json.loads(json.dumps(API_DB_WORKSHOP)))
    wod = await Backend2E(box, box.config()).start()
    try:
        job = await wod.order("CREATE 2 2 p2@example.com", SAMPLE_WORKSHOP)
    finally:
        await wod.stop()
        box.close()
    assert job.state is JobState.DONE, job.reason
    assert job.result["workshop_record"] == "API-DB"
    assert "compiled" not in job.result
    assert (box.home(2) / SAMPLE_WORKSHOP / "0-ReadMeFirst.ipynb").is_file()
    if os.getuid() == 0:
        assert job.result["password_set_on"] == ["linux"]  # "ldap": "false" is no LDAP


def test_a_multi_line_reason_keeps_the_jobs_table_one_line_per_job(tmp_path, capsys):
    state = tmp_path / "state"
    journal = Journal(state / "journal.sqlite3")

    async def fill() -> None:
        for student in (1, 2):
            order = Order(verb=Verb.CREATE, student=student, customer=0,
                          workshop="WKSHP-API101", content="WKSHP-API101", mode=Mode.WKSHP)
            accepted = await journal.accept(order, Arrival(peer="127.0.0.1", envelope_from="a@b"))
            await journal.finish(accepted.job_id, JobState.FAILED,
                                 reason="1 validation error for X\nrange.1\n  Field required")

    asyncio.run(fill())
    journal.close()
    config = tmp_path / "wodmail.yml"
    config.write_text(yaml.safe_dump({"state_dir": str(state)}))
    assert cli.main(["jobs", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # header + one line per job
    assert all(line.endswith("1 validation error for X range.1 Field required")
               for line in lines[1:])
