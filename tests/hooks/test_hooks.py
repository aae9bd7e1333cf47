"""Workshop hooks: handler modules, legacy scripts (real subprocesses) and the Docker101 handler."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import stat
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog.testing

from support.paths import REPO
from wodmail.config import parse_config
from wodmail.errors import ConfigurationError, HookFailed
from wodmail.hooks import HookContext
from wodmail.hooks.phases import Hooks, check

WS = "WKSHP-Test101"


def write_module(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def write_script(
    folder: Path, name: str, body: str, *, executable: bool = True, shebang: str = "#!/bin/sh"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"{shebang}\n{body}")
    path.chmod(0o755 if executable else 0o644)
    return path


def logging_module(tag: str, workshops: tuple[str, ...] = (WS,), phases: str = "create") -> str:
    """A handler module whose hooks append `tag:phase` to HOME/order.log."""
    functions = "".join(
        f"async def {phase}(ctx):\n"
        f"    with open(ctx.home / 'order.log', 'a') as log:\n"
        f"        log.write('{tag}:{phase}\\n')\n\n"
        for phase in phases.split(",")
    )
    return f"WORKSHOPS = {workshops!r}\n\n{functions}"


def logging_script(tag: str) -> str:
    return f'echo "{tag}" >> "$stddir/order.log"\n'


def make_ctx(tmp_path: Path, **overrides: Any) -> HookContext:
    home = tmp_path / "home" / "student5"
    home.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "student": 5,
        "workshop": WS,
        "content": WS,
        "workshop_id": 42,
        "record": {"range": [3, 10]},
        "password": "S3cretPassw0rd",
        "target": "10.0.0.7",
        "home": home,
        "homes": {5: home},
    }
    values.update(overrides)
    return HookContext(**values)


def order_log(ctx: HookContext) -> list[str]:
    assert ctx.home is not None
    path = ctx.home / "order.log"
    return path.read_text().splitlines() if path.exists() else []


# --- discovery ---------------------------------------------------------------------------


def test_modules_are_discovered_in_public_and_private_folders(tmp_path: Path) -> None:
    public, private = tmp_path / "public", tmp_path / "private"
    write_module(public, "test101", logging_module("pub", phases="create,reset"))
    write_module(public, "_helpers", "X = 1\n")  # a helper, not a handler
    write_module(private, "other", logging_module("priv", ("WKSHP-Other",), "cleanup"))

    hooks = Hooks.load(public_handlers=public, private_handlers=private)

    assert hooks.has("create", WS)
    assert hooks.has("reset", WS)
    assert not hooks.has("cleanup", WS)
    assert hooks.has("cleanup", "WKSHP-Other")
    assert not hooks.has("create", "WKSHP-Other")


async def test_public_handlers_given_as_a_package_are_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"handlers_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    write_module(tmp_path / package, "__init__", "")
    write_module(tmp_path / package, "test101", logging_module("pkg"))
    monkeypatch.syspath_prepend(str(tmp_path))

    hooks = Hooks.load(public_handlers=package)
    ctx = make_ctx(tmp_path)
    runs = await hooks.run("create", ctx)

    assert [run.name for run in runs] == [f"module {package}.test101:create"]
    assert order_log(ctx) == ["pkg:create"]


def test_two_modules_claiming_one_workshop_name_both_files(tmp_path: Path) -> None:
    first = write_module(tmp_path, "a", logging_module("a"))
    second = write_module(tmp_path, "b", logging_module("b", (WS, "WKSHP-B")))
    with pytest.raises(ConfigurationError) as caught:
        Hooks.load(private_handlers=tmp_path)
    assert str(first) in str(caught.value)
    assert str(second) in str(caught.value)
    assert WS in str(caught.value)


def test_a_module_that_fails_to_import_is_named_with_its_exception(tmp_path: Path) -> None:
    broken = write_module(tmp_path, "broken", "WORKSHOPS = ('WKSHP-X',)\nimport no_such_mod_x\n")
    with pytest.raises(ConfigurationError) as caught:
        Hooks.load(private_handlers=tmp_path)
    message = str(caught.value)
    assert str(broken) in message
    assert "ModuleNotFoundError" in message
    assert "no_such_mod_x" in message


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("async def create(ctx): pass\n", "must declare WORKSHOPS"),
        ("WORKSHOPS = ('WKSHP-X')\n", "must declare WORKSHOPS"),
        ("WORKSHOPS = ('CHLG-X',)\n", "claim its content folder WKSHP-X"),
        ("WORKSHOPS = ('WKSHP-X',)\ndef create(ctx): pass\n", "create must be an async"),
    ],
)
def test_malformed_modules_are_configuration_errors(
    tmp_path: Path, text: str, complaint: str
) -> None:
    write_module(tmp_path, "bad", text)
    with pytest.raises(ConfigurationError, match=complaint):
        Hooks.load(private_handlers=tmp_path)


def test_a_missing_private_handler_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        Hooks.load(private_handlers=tmp_path / "nope")


# --- order and results -------------------------------------------------------------------


def four_hooks(tmp_path: Path, *, public_phases: str = "create") -> tuple[Path, Path]:
    """A public and a private module and script for WS; returns the two scripts."""
    write_module(tmp_path / "pub-mod", "test101", logging_module("public-module",
                                                                 phases=public_phases))
    write_module(tmp_path / "priv-mod", "test101", logging_module("private-module"))
    public_script = write_script(
        tmp_path / "pub-sh", f"create-{WS}.sh", logging_script("public-script")
    )
    private_script = write_script(
        tmp_path / "priv-sh", f"create-{WS}.sh", logging_script("private-script")
    )
    return public_script, private_script


def load_four(tmp_path: Path, use_scripts: tuple[str, ...] = ()) -> Hooks:
    return Hooks.load(
        public_handlers=tmp_path / "pub-mod",
        private_handlers=tmp_path / "priv-mod",
        public_scripts=tmp_path / "pub-sh",
        private_scripts=tmp_path / "priv-sh",
        use_scripts=use_scripts,
    )


async def test_the_public_module_replaces_the_stock_script_of_its_phase(tmp_path: Path) -> None:
    public_script, private_script = four_hooks(tmp_path)
    ctx = make_ctx(tmp_path)

    runs = await load_four(tmp_path).run("create", ctx)

    assert order_log(ctx) == ["public-module:create", "private-module:create", "private-script"]
    assert [(run.name, run.skipped) for run in runs] == [
        (f"module {tmp_path / 'pub-mod' / 'test101.py'}:create", ""),
        (f"script {public_script}",
         f"not run: module {tmp_path / 'pub-mod' / 'test101.py'} does create "
         f"(hooks.use_scripts: [{WS}] runs this script instead)"),
        (f"module {tmp_path / 'priv-mod' / 'test101.py'}:create", ""),
        (f"script {private_script}", ""),
    ]
    assert all(run.ok for run in runs)


async def test_use_scripts_brings_the_stock_script_back_instead_of_the_module(
    tmp_path: Path,
) -> None:
    public_script, _ = four_hooks(tmp_path)
    ctx = make_ctx(tmp_path)

    runs = await load_four(tmp_path, use_scripts=(WS,)).run("create", ctx)

    assert order_log(ctx) == ["public-script", "private-module:create", "private-script"]
    assert runs[0].skipped == f"not run: hooks.use_scripts names {WS}"
    assert runs[1].name == f"script {public_script}" and not runs[1].skipped


async def test_a_phase_the_public_module_lacks_still_runs_the_stock_script(
    tmp_path: Path,
) -> None:
    four_hooks(tmp_path, public_phases="reset")
    ctx = make_ctx(tmp_path)

    await load_four(tmp_path).run("create", ctx)

    assert order_log(ctx) == ["public-script", "private-module:create", "private-script"]


def test_use_scripts_in_the_config_reaches_the_hook_set(tmp_path: Path) -> None:
    config = parse_config({"hooks": {"use_scripts": ["WKSHP-Ansible101", "CHLG-Docker101"]}})
    assert config.hooks.use_scripts == ["WKSHP-Ansible101", "WKSHP-Docker101"]
    with pytest.raises(ConfigurationError, match="'Ansible101' is not a workshop name"):
        parse_config({"hooks": {"use_scripts": ["Ansible101"]}})


async def test_post_copy_runs_the_post_copy_script(tmp_path: Path) -> None:
    write_script(tmp_path, f"post-copy-{WS}.sh", logging_script("post-copy"))
    hooks = Hooks.load(public_scripts=tmp_path)
    ctx = make_ctx(tmp_path)
    assert hooks.has("post_copy", WS)
    await hooks.run("post_copy", ctx)
    assert order_log(ctx) == ["post-copy"]


async def test_script_output_is_kept_in_order(tmp_path: Path) -> None:
    write_script(tmp_path, f"cleanup-{WS}.sh", "echo one\necho two >&2\necho three\n")
    hooks = Hooks.load(public_scripts=tmp_path)
    (run,) = await hooks.run("cleanup", make_ctx(tmp_path))
    assert run.output == "one\ntwo\nthree\n"


async def test_a_non_executable_script_is_ignored(tmp_path: Path) -> None:
    write_script(tmp_path, f"create-{WS}.sh", logging_script("ran"), executable=False)
    hooks = Hooks.load(public_scripts=tmp_path)
    ctx = make_ctx(tmp_path)
    assert not hooks.has("create", WS)
    assert await hooks.run("create", ctx) == []
    assert order_log(ctx) == []


async def test_a_failing_script_fails_with_its_output_and_stops_the_phase(
    tmp_path: Path,
) -> None:
    script = write_script(
        tmp_path / "pub", f"create-{WS}.sh", "echo to-out\necho to-err >&2\nexit 3\n"
    )
    write_script(tmp_path / "priv", f"create-{WS}.sh", logging_script("private-script"))
    hooks = Hooks.load(public_scripts=tmp_path / "pub", private_scripts=tmp_path / "priv")
    ctx = make_ctx(tmp_path)

    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", ctx)

    assert caught.value.hook == f"script {script}"
    assert "exited with status 3" in str(caught.value)
    assert caught.value.output == "to-out\nto-err\n"
    assert order_log(ctx) == []


async def test_a_raising_module_fails_naming_the_module_and_the_exception(
    tmp_path: Path,
) -> None:
    module = write_module(
        tmp_path,
        "test101",
        f"WORKSHOPS = ({WS!r},)\n"
        "async def cleanup(ctx):\n    raise ValueError('no appliance answers')\n",
    )
    hooks = Hooks.load(private_handlers=tmp_path)
    with pytest.raises(HookFailed) as caught:
        await hooks.run("cleanup", make_ctx(tmp_path))
    assert caught.value.hook == f"module {module}:cleanup"
    assert "ValueError: no appliance answers" in str(caught.value)
    assert "no appliance answers" in caught.value.output  # the traceback, for the admin


async def test_a_module_hook_that_hangs_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "test101",
        f"import asyncio\nWORKSHOPS = ({WS!r},)\n"
        "async def reset(ctx):\n    await asyncio.sleep(300)\n",
    )
    hooks = Hooks.load(private_handlers=tmp_path, timeout=0.2)
    with pytest.raises(HookFailed, match="timed out after 0.2 s"):
        await hooks.run("reset", make_ctx(tmp_path))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _survivors(pids: list[int]) -> list[int]:
    """The pids still alive once the kernel has had up to 10 s to finish delivering SIGKILL."""
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


async def test_a_timed_out_script_has_its_whole_process_group_killed(tmp_path: Path) -> None:
    write_script(
        tmp_path / "sh",
        f"create-{WS}.sh",
        'sleep 300 &\necho $! > "$stddir/pids"\nsleep 300 &\necho $! >> "$stddir/pids"\n'
        'echo $$ >> "$stddir/pids"\necho started\nsleep 300\n',
    )
    hooks = Hooks.load(public_scripts=tmp_path / "sh", timeout=1)
    ctx = make_ctx(tmp_path)

    with pytest.raises(HookFailed, match="timed out after 1 s") as caught:
        await hooks.run("create", ctx)

    assert caught.value.output == "started\n"
    pids = [int(line) for line in (ctx.home / "pids").read_text().split()]  # type: ignore[operator]
    assert len(pids) == 3
    assert _survivors(pids) == []


async def test_a_script_that_exits_is_not_held_up_by_a_background_child(
    tmp_path: Path,
) -> None:
    write_script(tmp_path, f"create-{WS}.sh", 'sleep 300 &\necho $! > "$stddir/pid"\n')
    hooks = Hooks.load(public_scripts=tmp_path, timeout=60)
    ctx = make_ctx(tmp_path)
    (run,) = await hooks.run("create", ctx)
    assert run.ok
    os.kill(int((ctx.home / "pid").read_text()), 9)  # type: ignore[operator]


# --- the script environment ----------------------------------------------------------------


def env_dump_script(folder: Path, name: str, dump: Path) -> Path:
    body = f"import json, os\njson.dump(dict(os.environ), open({str(dump)!r}, 'w'))\n"
    return write_script(folder, name, body, shebang=f"#!{sys.executable}")


async def test_scripts_get_exactly_the_agreed_variables_and_no_daemon_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WODMAIL_PORTAL_PASSWORD", "daemon-secret-value")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    monkeypatch.setenv("HOME", "/root-home-of-daemon")
    dump = tmp_path / "env.json"
    env_dump_script(tmp_path / "sh", f"create-{WS}.sh", dump)
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    ctx = make_ctx(tmp_path)

    await hooks.run("create", ctx)

    env = json.loads(dump.read_text())
    assert set(env) == {
        "PATH",
        "HOME",
        "LANG",
        "USER",
        "LOGNAME",
        "stdid",
        "w",
        "ws",
        "wid",
        "stddir",
        "randompw",
        "WODRTARGET",
        "WODMAIL_VARS_FILE",
    }
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == "/root-home-of-daemon"
    assert env["LANG"] == "C.UTF-8"
    assert (env["stdid"], env["w"], env["ws"], env["wid"]) == ("5", WS, WS, "42")
    assert env["stddir"] == str(ctx.home)
    assert env["randompw"] == "S3cretPassw0rd"
    assert env["WODRTARGET"] == "10.0.0.7"
    assert "daemon-secret-value" not in json.dumps(env)


async def test_reset_range_env_has_no_password_or_target_when_none_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANG", "C.UTF-8")
    dump = tmp_path / "env.json"
    env_dump_script(tmp_path / "sh", f"reset-{WS}.sh", dump)
    homes = {n: tmp_path / f"student{n}" for n in (3, 4, 5)}
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    ctx = make_ctx(
        tmp_path,
        student=None,
        students=[3, 4, 5],
        workshop="CHLG-Test101",
        home=None,
        homes=homes,
        password=None,
        target=None,
    )

    await hooks.run("reset", ctx)

    env = json.loads(dump.read_text())
    assert "randompw" not in env
    assert "WODRTARGET" not in env
    assert (env["stdid"], env["stddir"], env["w"], env["ws"]) == (
        "3",
        str(homes[3]),
        "CHLG-Test101",
        WS,
    )


async def test_lines_of_the_vars_file_become_student_variables(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        f"create-{WS}.sh",
        'echo "HTTPPORT=$((14151 + stdid - 3))" >> "$WODMAIL_VARS_FILE"\n'
        'printf \'# a comment\\n\\nSPARKTOK="abc def"\\n\' >> "$WODMAIL_VARS_FILE"\n',
    )
    hooks = Hooks.load(public_scripts=tmp_path)
    ctx = make_ctx(tmp_path, student_vars={"EARLIER": "kept"})

    await hooks.run("create", ctx)

    assert ctx.student_vars == {"EARLIER": "kept", "HTTPPORT": "14153", "SPARKTOK": "abc def"}


async def test_a_malformed_vars_file_line_fails_the_hook(tmp_path: Path) -> None:
    write_script(tmp_path, f"create-{WS}.sh", 'echo "not a variable" >> "$WODMAIL_VARS_FILE"\n')
    hooks = Hooks.load(public_scripts=tmp_path)
    with pytest.raises(HookFailed, match="line 1 of WODMAIL_VARS_FILE is not KEY=VALUE"):
        await hooks.run("create", make_ctx(tmp_path))


async def test_the_password_reaches_the_script_but_not_the_logs(tmp_path: Path) -> None:
    write_script(tmp_path, f"create-{WS}.sh", 'echo "pw=$randompw"\nexit 1\n')
    hooks = Hooks.load(public_scripts=tmp_path)
    with structlog.testing.capture_logs() as logs, pytest.raises(HookFailed) as caught:
        await hooks.run("create", make_ctx(tmp_path))
    assert caught.value.output == "pw=S3cretPassw0rd\n"  # kept for the admin's result
    assert logs  # the failure was logged ...
    assert "S3cretPassw0rd" not in repr(logs)  # ... without the password


# --- has() for RESET -----------------------------------------------------------------------


def test_has_reset_sees_modules_and_executable_scripts(tmp_path: Path) -> None:
    write_module(tmp_path / "priv-mod", "m", logging_module("m", ("WKSHP-Mod",), "reset"))
    write_script(tmp_path / "priv-sh", "reset-WKSHP-Sh.sh", "true\n")
    write_script(tmp_path / "priv-sh", "reset-WKSHP-Off.sh", "true\n", executable=False)
    hooks = Hooks.load(private_handlers=tmp_path / "priv-mod", private_scripts=tmp_path / "priv-sh")

    assert hooks.has("reset", "WKSHP-Mod")
    assert hooks.has("reset", "WKSHP-Sh")
    assert not hooks.has("reset", "WKSHP-Off")
    assert not hooks.has("reset", "WKSHP-None")
    assert not hooks.has("create", "WKSHP-Sh")


def test_check_reports_scripts_that_will_be_ignored(tmp_path: Path) -> None:
    ignored = write_script(tmp_path, "cleanup-WKSHP-Off.sh", "true\n", executable=False)
    config = parse_config(
        {"scripts": {"public": str(tmp_path), "private": str(tmp_path / "gone")}}, "test"
    )
    problems = check(config, public_handlers=REPO / "workshops")
    assert f"{ignored} is not executable: it will be ignored" in problems
    assert any(f"{tmp_path / 'gone'} does not exist" in problem for problem in problems)


def test_check_reports_a_broken_private_handler(tmp_path: Path) -> None:
    write_module(tmp_path, "broken", "WORKSHOPS = ('WKSHP-X',)\n1/0\n")
    config = parse_config({"handlers": {"private": str(tmp_path)}}, "test")
    (problem,) = check(config)
    assert "broken.py failed to import: ZeroDivisionError" in problem


# --- the Docker101 handler -----------------------------------------------------------------

DOCKER = "WKSHP-Docker101"
DOCKER_VARS = {"HTTPPORT-WKSHP-Docker101": "14151", "SSHPORT-WKSHP-Docker101": 14101}


@pytest.fixture
def docker101() -> ModuleType:
    """The shipped module, as installed: workshops/ is the package wodmail.workshops."""
    return importlib.import_module("wodmail.workshops.docker101")


def docker_ctx(tmp_path: Path, student: int, **overrides: Any) -> HookContext:
    home = tmp_path / f"student{student}"
    home.mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "student": student,
        "workshop": DOCKER,
        "content": DOCKER,
        "record": {"range": [3, 22], "monoappliance": True},
        "target": "10.1.2.3",
        "home": home,
        "variables": DOCKER_VARS,
    }
    values.update(overrides)
    return make_ctx(tmp_path, **values)


@pytest.mark.parametrize(
    ("student", "http", "ssh"), [(3, 14151, 14101), (4, 14152, 14102), (22, 14170, 14120)]
)
async def test_docker101_allocates_ports_from_the_range(
    tmp_path: Path, docker101: ModuleType, student: int, http: int, ssh: int
) -> None:
    """The backend half of its CREATE (the appliance half: tests/appliances)."""
    ctx = docker_ctx(tmp_path, student)

    docker101.configure_backend(ctx, *docker101.ports(ctx))

    assert ctx.student_vars == {"HTTPPORT": http}
    config = (tmp_path / f"student{student}" / ".ssh" / "config").read_text()
    assert config.startswith("# BEGIN wodmail WKSHP-Docker101\n")
    assert "Host 10.1.2.3\n" in config
    assert f"    User student{student}\n" in config
    assert f"    Port {ssh}\n" in config
    assert "    IdentityFile ~/.ssh/id_rsa\n" in config
    assert "    StrictHostKeyChecking accept-new\n" in config


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="root only: the home is given to the student's uid (chown)")
async def test_docker101_rerun_replaces_its_block_and_keeps_foreign_entries(
    tmp_path: Path, docker101: ModuleType
) -> None:
    ssh_dir = tmp_path / "student5" / ".ssh"
    ssh_dir.mkdir(parents=True)
    os.chown(tmp_path / "student5", 54321, 54321)  # the student's uid; no account needed
    foreign = "Host github.com\n    User git\n    IdentityFile ~/.ssh/gh\n"
    (ssh_dir / "config").write_text(foreign)

    for target in ("10.1.2.3", "10.9.9.9"):
        ctx = docker_ctx(tmp_path, 5, target=target)
        docker101.configure_backend(ctx, *docker101.ports(ctx))

    config = (ssh_dir / "config").read_text()
    assert config.count("# BEGIN wodmail WKSHP-Docker101") == 1
    assert config.count("# END wodmail WKSHP-Docker101") == 1
    assert "Host 10.9.9.9\n" in config
    assert "10.1.2.3" not in config
    assert config.endswith(foreign)
    assert stat.S_IMODE((ssh_dir / "config").stat().st_mode) == 0o600
    # ssh refuses a config its user does not own
    assert (ssh_dir / "config").stat().st_uid == 54321


async def test_docker101_entry_is_what_ssh_itself_resolves(
    tmp_path: Path, docker101: ModuleType
) -> None:
    """The real ssh client reads the file: our block wins, global options still apply."""
    ssh_dir = tmp_path / "student5" / ".ssh"
    ssh_dir.mkdir(parents=True)
    foreign = "ServerAliveInterval 31\n\nHost *\n    Port 2222\n    User nobody\n"
    (ssh_dir / "config").write_text(foreign)
    ctx = docker_ctx(tmp_path, 5, target="10.9.9.9")
    docker101.configure_backend(ctx, *docker101.ports(ctx))

    ours = _ssh_settings(await ctx.run("ssh", "-F", ssh_dir / "config", "-G", "10.9.9.9"))
    other = _ssh_settings(await ctx.run("ssh", "-F", ssh_dir / "config", "-G", "elsewhere"))

    assert (ours["port"], ours["user"]) == ("14103", "student5")
    assert ours["stricthostkeychecking"] == "accept-new"
    assert ours["serveraliveinterval"] == other["serveraliveinterval"] == "31"
    assert (other["port"], other["user"]) == ("2222", "nobody")


def _ssh_settings(output: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


async def test_ctx_run_fails_with_the_command_output(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    with pytest.raises(HookFailed, match="command sh: exited with status 4") as caught:
        await ctx.run("sh", "-c", "echo nope >&2; exit 4")
    assert caught.value.output == "nope\n"


@pytest.mark.parametrize("missing", ["HTTPPORT-WKSHP-Docker101", "SSHPORT-WKSHP-Docker101"])
async def test_docker101_missing_base_port_is_a_configuration_error(
    tmp_path: Path, docker101: ModuleType, missing: str
) -> None:
    variables = {key: value for key, value in DOCKER_VARS.items() if key != missing}
    with pytest.raises(ConfigurationError, match=f"{missing} is not set"):
        await docker101.create(docker_ctx(tmp_path, 5, variables=variables))


async def test_docker101_placeholder_port_and_no_target_are_configuration_errors(
    tmp_path: Path, docker101: ModuleType
) -> None:
    placeholder = {**DOCKER_VARS, "HTTPPORT-WKSHP-Docker101": "xyzz"}
    with pytest.raises(ConfigurationError, match="'xyzz' is not a port number"):
        await docker101.create(docker_ctx(tmp_path, 5, variables=placeholder))
    with pytest.raises(ConfigurationError, match="needs an appliance"):
        await docker101.create(docker_ctx(tmp_path, 5, target=None))
    with pytest.raises(ConfigurationError, match="no student range"):
        await docker101.create(docker_ctx(tmp_path, 5, record={}))


async def test_docker101_failure_through_the_hook_set_names_the_module(
    tmp_path: Path,
) -> None:
    hooks = Hooks.load(public_handlers=REPO / "workshops")
    with pytest.raises(HookFailed, match="ConfigurationError: HTTPPORT-WKSHP-Docker101"):
        await hooks.run("create", docker_ctx(tmp_path, 5, variables={}))


async def test_a_handler_folder_is_a_package_whose_helpers_modules_import(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "priv-mod"
    write_module(folder, "_common", "TAG = 'from-helper'\n")
    write_module(folder, "test101", (
        "from ._common import TAG\n"
        f"WORKSHOPS = ({WS!r},)\n\n"
        "async def create(ctx):\n"
        "    (ctx.home / 'order.log').write_text(TAG + '\\n')\n"
    ))
    ctx = make_ctx(tmp_path)

    await Hooks.load(private_handlers=folder).run("create", ctx)
    write_module(folder, "_common", "TAG = 'edited'\n")  # a reload reads the helper again
    await Hooks.load(private_handlers=folder).run("create", ctx)

    assert order_log(ctx) == ["edited"]
