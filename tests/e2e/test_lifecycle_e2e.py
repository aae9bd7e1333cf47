"""The four verbs end to end: a portal-style SMTP order in, real files in a temp students
dir, the real `chpasswd -R` on a sandbox root (as root), and exactly the calls LIFECYCLE.md
lists at the stand-in portal and hub (real HTTP on loopback). BASESTDID is 100 throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from ldap3 import Connection, Server

from support.e2e import Backend2E, hub_calls, listing, portal_writes, shadow_matches
from support.slapd_fixture import Slapd
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, make_sandbox
from wodmail.journal.jobs import JobState

BASE = 100  # e2e.py's sandbox: students 1..10, BASESTDID 100
WS = SAMPLE_WORKSHOP
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chpasswd -R and chown need root")



def api(path: str) -> str:
    return f"/api/{path}"


def make_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def execute_first_cell(notebook: Path) -> None:
    data = json.loads(notebook.read_text())
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"] = 1
            break
    notebook.write_text(json.dumps(data))


@needs_root
async def test_create(sandbox, backend):
    wod = await backend()
    job = await wod.order("CREATE 3 3 p3@example.com", WS)
    assert job.state is JobState.DONE, job.reason
    password = job.result["password"]
    home = sandbox.home(3)

    readme = (home / WS / "0-ReadMeFirst.ipynb").read_text()
    assert "student3" in readme and "This is workshop WKSHP-Sample101." in readme
    assert "http://backend.example.org:8000" in readme  # nested group_vars value expanded
    assert "{{.metadata.name}}" in readme
    checkpoint = home / WS / ".ipynb_checkpoints" / "0-ReadMeFirst-checkpoint.ipynb"
    assert checkpoint.read_text() == readme
    assert (home / WS / "pictures" / "wod-logo.png").read_bytes() == (
        sandbox.notebooks / WS / "pictures" / "wod-logo.png").read_bytes()
    workspace = next((home / ".jupyter" / "lab" / "workspaces").iterdir())
    assert f"{WS}/0-ReadMeFirst.ipynb" in workspace.read_text()
    assert (home / ".bashrc").read_text().startswith("# wodmail sample skeleton")
    assert (home / ".ssh" / "id_rsa").stat().st_mode & 0o777 == 0o600
    assert (home / WS / "1-Python-Basics.ipynb").stat().st_uid == sandbox.uid(3)
    assert shadow_matches(sandbox.accounts_root, "student3", password)

    assert portal_writes(sandbox) == [
        ("PUT", api("student/103"), {"password": password}),
        ("PUT", api("customer/3"), {"active": True}),
    ]
    assert sandbox.portal.student(103)["password"] == password
    assert hub_calls(sandbox) == [("POST", "/hub/api/users/student3/server")]
    assert sandbox.hub.is_running("student3")
    steps = [step["name"] for step in job.result["steps"]]
    assert steps.index("set-password student3") < steps.index("deploy") < steps.index("hub start")


@needs_root
async def test_create_wipes_what_a_previous_participant_left(sandbox, backend):
    home = sandbox.home(4)
    (home / ".leftover").write_text("old dotfile")
    (home / WS).mkdir()
    (home / WS / "old.ipynb").write_text("{}")
    wod = await backend()
    job = await wod.order("CREATE 4 4", WS)
    assert job.state is JobState.DONE, job.reason
    assert not (home / ".leftover").exists()
    assert not (home / WS / "old.ipynb").exists()


@needs_root
async def test_cleanup_without_reset(sandbox, backend):
    wod = await backend()
    await wod.order("CREATE 2 2", WS)
    execute_first_cell(sandbox.home(2) / WS / "0-ReadMeFirst.ipynb")  # 1 of 3 code cells
    sandbox.clear_calls()

    job = await wod.order("CLEANUP 2 2", WS)
    assert job.state is JobState.DONE, job.reason
    password = job.result["password"]
    assert job.result["completion"] == 33
    assert portal_writes(sandbox) == [
        ("PUT", api("student/102"), {"password": password}),
        ("PUT", api("customer/2"), {"completionPercentage": 33}),
        ("PUT", api("student/102"), {"assigned": False}),
        ("PUT", api("customer/2"), {"cleaned": True}),
    ]
    assert hub_calls(sandbox) == [("DELETE", "/hub/api/users/student2/server")]
    assert shadow_matches(sandbox.accounts_root, "student2", password)
    assert not (sandbox.home(2) / WS).exists()
    assert listing(sandbox.home(2)) == [".bashrc", ".ssh", ".ssh/id_rsa", ".ssh/id_rsa.pub"]


@needs_root
async def test_cleanup_of_a_reset_workshop_keeps_the_home(tmp_path, backend):
    box = make_sandbox(tmp_path / "reset", students=range(1, 6), base_id=BASE,
                       workshop_fields={"reset": True})
    try:
        wod = Backend2E(box, box.config())
        await wod.start()
        await wod.order("CREATE 1 1", WS)
        box.portal.clear_calls()
        job = await wod.order("CLEANUP 1 1", WS)
        await wod.stop()
    finally:
        box.close()
    assert job.state is JobState.DONE, job.reason
    assert [w[1:] for w in portal_writes(box)][2:] == [
        (api("student/101"), {"assigned": True}),
        (api("customer/1"), {"active": False}),
        (api("customer/1"), {"cleaned": True}),
    ]
    assert (box.home(1) / WS / "0-ReadMeFirst.ipynb").exists()


def reset_handler(folder: Path, record: Path) -> None:
    """A handler module whose reset hook writes down each run: student, password, target."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sample_reset.py").write_text(textwrap.dedent(f"""
        import json
        WORKSHOPS = ("{WS}",)

        async def reset(ctx):
            with open({str(record)!r}, "a") as out:
                out.write(json.dumps([ctx.student, ctx.students, ctx.password, ctx.target]))
                out.write("\\n")
    """))


def reset_runs(record: Path) -> list[list]:
    return [json.loads(line) for line in record.read_text().splitlines()]


@needs_root
async def test_reset_range(tmp_path, sandbox):
    box = make_sandbox(tmp_path / "r", students=range(1, 11), base_id=BASE,
                       workshop_fields={"reset": True})
    record = tmp_path / "reset-students"
    reset_handler(tmp_path / "handlers", record)
    try:
        for n in (2, 3, 4):
            (box.home(n) / "work.txt").write_text("x")
        wod = await Backend2E(box, box.config(handlers={"private": str(tmp_path / "handlers")}))\
            .start()
        job = await wod.order("RESET 2,4 0", WS)
        await wod.stop()
    finally:
        box.close()
    assert job.state is JobState.DONE, job.reason
    # Once per student, as procmail-action.sh's RESET loop ran the reset scripts.
    assert [run[:2] for run in reset_runs(record)] == [[2, [2]], [3, [3]], [4, [4]]]
    assert portal_writes(box) == [
        ("PUT", api("workshop/1"), {"capacity": 3}),
        ("PUT", api("student/102"), {"assigned": False}),
        ("PUT", api("student/103"), {"assigned": False}),
        ("PUT", api("student/104"), {"assigned": False}),
    ]
    for n in (2, 3, 4):
        assert not (box.home(n) / "work.txt").exists()


@needs_root
@pytest.mark.parametrize("appliance", ["monoappliance", "multiappliance"])
async def test_reset_gives_each_student_its_new_password_and_target(tmp_path, appliance):
    # The defect: RESET ran the reset scripts without randompw (so the stock
    # reset-appliance.sh ran `echo studentN: | sudo chpasswd` and the previous participant's
    # password kept working on the appliance), and a range got no WODRTARGET at all.
    box = make_sandbox(tmp_path / "r", students=range(1, 11), base_id=BASE,
                       workshop_fields={"reset": True, appliance: True})
    record = tmp_path / "reset-runs"
    reset_handler(tmp_path / "handlers", record)
    make_script(tmp_path / "scripts", f"reset-{WS}.sh", """\
        echo "stdid=$stdid target=${WODRTARGET:-none} pw=${randompw:+set}"
    """)
    config = box.config(handlers={"private": str(tmp_path / "handlers")},
                        scripts={"private": str(tmp_path / "scripts")},
                        vars={f"IP-{WS}": "192.0.2.10"})
    try:
        wod = await Backend2E(box, config).start()
        ranged = await wod.order("RESET 2,4 0", WS)
        single = await wod.order("RESET 6 0", WS)
        await wod.stop()
        runs = reset_runs(record)
        assert ranged.state is JobState.DONE, ranged.reason
        assert single.state is JobState.DONE, single.reason
        assert [run[0] for run in runs] == [2, 3, 4, 6]
        for student, _, password, _ in runs:
            assert password and shadow_matches(box.accounts_root, f"student{student}", password)
        assert len({run[2] for run in runs}) == 4
    finally:
        box.close()
    # The mono appliance is the same for everyone; a multi appliance's last octet moves with
    # the student (range 1..10: student N gets .10 + N - 1).
    expected = {n: "192.0.2.10" if appliance == "monoappliance" else f"192.0.2.{9 + n}"
                for n in (2, 3, 4, 6)}
    assert [run[3] for run in runs] == [expected[n] for n in (2, 3, 4, 6)]
    outputs = [hook["output"] for job in (ranged, single) for hook in job.result["hooks"]
               if hook["name"].startswith("script ")]
    assert [line.strip() for line in outputs] == [
        f"stdid={n} target={expected[n]} pw=set" for n in (2, 3, 4, 6)]


@needs_root
async def test_reset_without_a_reset_hook_fails_saying_so(tmp_path):
    box = make_sandbox(tmp_path / "r", students=range(1, 6), base_id=BASE,
                       workshop_fields={"reset": True})
    try:
        wod = await Backend2E(box, box.config()).start()
        job = await wod.order("RESET 3 0", WS)
        await wod.stop()
    finally:
        box.close()
    assert job.state is JobState.FAILED
    assert job.reason == f"no reset hook for {WS}"


async def test_reset_of_a_workshop_without_reset_flag_does_nothing(sandbox, backend):
    wod = await backend()
    job = await wod.order("RESET 5 0", WS)
    assert job.state is JobState.DONE, job.reason
    assert portal_writes(sandbox) == []
    assert job.result["steps"][-1]["status"] == "skipped"


@needs_root
async def test_reset_waits_for_cleaned_without_blocking_other_students(tmp_path):
    box = make_sandbox(tmp_path / "r", students=range(1, 6), base_id=BASE,
                       workshop_fields={"reset": True})
    reset_handler(tmp_path / "handlers", tmp_path / "record")
    box.portal.add_customer(5, notebook=WS, studentId=105, cleaned=False)
    try:
        wod = await Backend2E(box, box.config(
            handlers={"private": str(tmp_path / "handlers")}, dispatch={"concurrency": 1},
        )).start()
        await wod.send("RESET 5 5", WS)
        other = await wod.order("CREATE 1 1", WS)  # one worker slot: RESET must have let go
        assert other.state is JobState.DONE, other.reason
        [reset] = [job for job in wod.jobs() if job.verb == "RESET"]
        assert reset.state is JobState.RUNNING
        box.portal.add_customer(5, notebook=WS, studentId=105, cleaned=True)
        reset = await wod.wait(reset.id)
        await wod.stop()
    finally:
        box.close()
    assert reset.state is JobState.DONE, reset.reason
    assert [run[0] for run in reset_runs(tmp_path / "record")] == [5]


@needs_root
async def test_purge_of_object_promise_resolves_the_student(sandbox, backend):
    wod = await backend()
    await wod.order("CREATE 4 4", WS)
    sandbox.portal.add_customer(4, notebook=WS, studentId=104, cleaned=True)
    sandbox.clear_calls()
    job = await wod.order("PURGE [object Promise] 4", WS)
    assert job.state is JobState.DONE, job.reason
    password = job.result["password"]
    assert job.result["student"] == 4
    assert job.student == 4  # recorded on the job: `wodmail jobs --student 4` finds it
    assert job.id in [j.id for j in wod.reader.list_jobs(student=4)]
    assert portal_writes(sandbox) == [
        ("PUT", api("student/104"), {"assigned": False, "password": password}),
    ]
    assert hub_calls(sandbox) == [("DELETE", "/hub/api/users/student4/server")]
    assert shadow_matches(sandbox.accounts_root, "student4", password)
    assert not (sandbox.home(4) / WS).exists()


@needs_root
async def test_customer_zero_skips_customer_callbacks(sandbox, backend):
    wod = await backend()
    job = await wod.order("CREATE 5 0", WS)
    assert job.state is JobState.DONE, job.reason
    assert portal_writes(sandbox) == [
        ("PUT", api("student/105"), {"password": job.result["password"]}),
    ]


@needs_root
async def test_challenge_uses_workshop_content_in_chlg_mode(sandbox, backend):
    wod = await backend()
    job = await wod.order("CREATE 6 6", "CHLG-Sample101")
    assert job.state is JobState.DONE, job.reason
    home = sandbox.home(6)
    assert "This is the **challenge** version of WKSHP-Sample101." in (
        home / WS / "0-ReadMeFirst.ipynb").read_text()
    assert "export MODE=challenge" in (home / WS / "env.sh").read_text()


@needs_root
async def test_failing_create_hook_fails_the_order_with_its_output(tmp_path, sandbox, backend):
    make_script(tmp_path / "scripts", f"create-{WS}.sh", """\
        echo "appliance for $stdid unreachable" >&2
        exit 3
    """)
    wod = await backend(scripts={"private": str(tmp_path / "scripts")})
    job = await wod.order("CREATE 7 7", WS)
    assert job.state is JobState.FAILED
    assert job.reason.startswith("hooks create: ")
    assert "exited with status 3" in job.reason
    failed = job.result["steps"][-1]
    assert "appliance for 7 unreachable" in failed["output"]
    assert not any(w[1] == api("customer/7") for w in portal_writes(sandbox))
    assert not (sandbox.home(7) / WS).exists()


@needs_root
async def test_undefined_template_variable_fails_before_touching_the_home(sandbox, backend):
    (sandbox.notebooks / WS / "2-Extra.ipynb").write_text('{"cells": ["{{ NOPE }}"]}\n')
    home = sandbox.home(8)
    (home / "notes.txt").write_text("kept")
    before = listing(home)
    wod = await backend()
    job = await wod.order("CREATE 8 8", WS)
    assert job.state is JobState.FAILED
    assert "2-Extra.ipynb: undefined variable 'NOPE'" in job.reason
    assert job.result["steps"][-1]["name"] == "check-templates"
    assert listing(home) == before
    assert portal_writes(sandbox) == []


@needs_root
async def test_portal_down_for_a_while_then_back(sandbox, backend):
    wod = await backend()
    sandbox.portal.set_down(True)
    loop = asyncio.get_running_loop()
    loop.call_later(1.0, sandbox.portal.set_down, False)
    job = await wod.order("CREATE 9 9", WS)
    assert job.state is JobState.DONE, job.reason
    retried = [step for step in job.result["steps"] if step.get("attempts", 1) > 1]
    assert retried, job.result["steps"]
    assert sandbox.portal.customer(9)["active"] is True


@needs_root
async def test_show_names_the_step_being_retried_and_its_try(sandbox, backend):
    wod = await backend(dispatch={"retry_base_seconds": 0.05, "retry_max_seconds": 0.2})
    await wod.order("CREATE 9 9", WS)
    sandbox.portal.set_down(True)
    await wod.send("CLEANUP 9 9", WS)
    current = None
    for _ in range(1500):  # up to ~30 s on a loaded machine
        running = [job.to_public() for job in wod.jobs() if job.verb == "CLEANUP"]
        current = running[0]["current_step"] if running else None
        if current and current["try"] >= 3:
            break
        await asyncio.sleep(0.02)
    sandbox.portal.set_down(False)
    assert current is not None and current["try"] >= 3, current
    assert current["name"].startswith("portal") and current["attempt"] == 1
    assert "API-DB" in current["last_error"]
    job = await wod.wait(2)
    assert job.state is JobState.DONE, job.reason
    assert job.to_public()["retries"] >= 2 and job.to_public()["current_step"] is None


@needs_root
async def test_portal_down_past_the_deadline_fails_with_the_reason(sandbox, backend):
    wod = await backend(dispatch={"retry_deadline_seconds": 1})
    sandbox.portal.set_down(True)
    job = await wod.order("CREATE 9 9", WS)
    sandbox.portal.set_down(False)
    assert job.state is JobState.FAILED
    assert "gave up after" in job.reason and "API-DB" in job.reason


@needs_root
async def test_token_expiring_mid_order(tmp_path, sandbox, backend):
    # The portal expires tokens after 1 s while wodmail believes they live 180 s: the
    # cleanup hook's pause makes the token die between two calls of the same order.
    sandbox.portal.token_ttl = 1.0  # type: ignore[attr-defined]
    make_script(tmp_path / "scripts", f"cleanup-{WS}.sh", "sleep 1.5\n")
    wod = await backend(scripts={"private": str(tmp_path / "scripts")})
    await wod.order("CREATE 10 10", WS)
    job = await wod.order("CLEANUP 10 10", WS)
    assert job.state is JobState.DONE, job.reason
    assert len(sandbox.portal.logins()) >= 2
    assert sandbox.portal.customer(10)["cleaned"] is True


@needs_root
async def test_create_rerun_after_interruption_keeps_one_password(tmp_path, sandbox, backend):
    gate = tmp_path / "gate"
    make_script(tmp_path / "scripts", f"post-copy-{WS}.sh", f"""\
        while [ ! -e {gate} ]; do sleep 0.05; done
    """)
    first = await backend(scripts={"private": str(tmp_path / "scripts")})
    await first.send("CREATE 1 1", WS)
    while not (first.jobs() and first.jobs()[0].result.get("password")):  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # saved in the order record before it is used anywhere
    saved = first.jobs()[0].result["password"]
    await asyncio.sleep(0.5)  # by now the order waits in its post-copy hook
    await first.stop(grace=0)  # the daemon dies mid-order
    gate.write_text("open")
    second = await backend(scripts={"private": str(tmp_path / "scripts")})
    job = await second.wait(1)
    assert job.state is JobState.DONE, job.reason
    assert job.attempts == 2
    assert job.result["password"] == saved
    assert sandbox.portal.student(101)["password"] == saved
    assert shadow_matches(sandbox.accounts_root, "student1", saved)


async def test_missing_home_fails_clearly(sandbox, backend):
    shutil.rmtree(sandbox.home(5))
    wod = await backend()
    job = await wod.order("CREATE 5 5", WS)
    assert job.state is JobState.FAILED
    assert "no home for student5" in job.reason


@needs_root
async def test_ldap_and_varpass_workshop(tmp_path, slapd: Slapd):
    box = make_sandbox(tmp_path / "l", students=range(1, 4), base_id=BASE,
                       workshop_fields={"ldap": True, "varpass": True})
    (box.notebooks / WS / "creds.sh").write_text("LOGIN=student{{ STDID }}\nPASS={{ PASSSTU }}\n")
    try:
        wod = await Backend2E(box, box.config(accounts={"ldap": {
            "server": slapd.host, "port": slapd.port, "base_dn": slapd.base_dn,
            "bind_dn": slapd.bind_dn, "password": slapd.bind_password,
        }})).start()
        job = await wod.order("CREATE 1 1", WS)
        await wod.stop()
    finally:
        box.close()
    assert job.state is JobState.DONE, job.reason
    password = job.result["password"]
    assert job.result["password_set_on"] == ["linux", "ldap"]
    assert (box.home(1) / WS / "creds.sh").read_text() == f"LOGIN=student1\nPASS={password}\n"
    connection = Connection(Server(slapd.host, port=slapd.port), user=slapd.dn("student1"),
                            password=password)
    assert connection.bind()
    connection.unbind()
    assert shadow_matches(box.accounts_root, "student1", password)


@needs_root
async def test_password_never_reaches_the_logs(sandbox, backend, capsys):
    from wodmail.logs import configure_logging

    configure_logging()
    wod = await backend()
    job = await wod.order("CREATE 2 2", WS)
    await wod.order("CLEANUP 2 2", WS)
    err = capsys.readouterr().err
    assert '"event": "order done"' in err
    for secret in (job.result["password"], "moderator-secret-pw", "sandbox-hub-token"):
        assert secret not in err


async def test_object_promise_with_an_unknown_customer_fails_with_the_reason(sandbox, backend):
    wod = await backend()
    job = await wod.order("PURGE [object Promise] 99", WS)  # no customer 99 in the API-DB
    assert job.state is JobState.FAILED
    assert job.reason.startswith("wait customer/99 cleaned: ")
    assert "customer 99 does not exist in the API-DB" in job.reason
    assert portal_writes(sandbox) == []


@needs_root
async def test_hub_refusing_the_start_is_a_configuration_warning_after_active(sandbox, backend):
    # After `active` the participant is shown as ready: the order is done, the hub's refusal
    # (a configuration error, not retried) is its warning (README: hub failure after active).
    # The token passed the CREATE's preflight: its role lost the scope meanwhile.
    sandbox.hub.refuse_starts(
        403, "Action is not authorized with current scopes; requires any of [start:servers]"
    )
    wod = await backend(dispatch={"retry_deadline_seconds": 60})
    job = await wod.order("CREATE 2 2", WS)
    assert job.state is JobState.DONE, job.reason
    assert sandbox.portal.customer(2)["active"] is True
    [warning] = job.result["warnings"]
    assert warning.startswith("hub start: ") and "scope" in warning
    assert "hub start" in job.result["summary"] and "scope" in job.result["summary"]
    hub_step = job.result["steps"][-1]
    assert hub_step["name"] == "hub start" and hub_step["status"] == "failed"
    assert hub_step.get("attempts", 1) == 1


@needs_root
async def test_hub_token_without_scope_fails_the_create_before_any_change(sandbox, backend):
    sandbox.hub.set_scopes("read:users", "read:servers")  # may look, not start
    wod = await backend(dispatch={"retry_deadline_seconds": 60})
    job = await wod.order("CREATE 2 2", WS)
    assert job.state is JobState.FAILED
    # Found by the CREATE's preflight, before the password or the home was touched.
    assert job.reason.startswith("hub check student2: ")
    assert "may not start servers" in job.reason and "start:servers" in job.reason
    hub_step = job.result["steps"][-1]
    assert hub_step["name"] == "hub check student2" and hub_step.get("attempts", 1) == 1
    steps = [step["name"] for step in job.result["steps"]]
    assert "set-password student2" not in steps and "wipe-home student2" not in steps
    assert portal_writes(sandbox) == []
