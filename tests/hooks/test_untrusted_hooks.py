"""Hooks run code and write files wodmail does not trust: what root reads back from a hook
is never followed through a link, and values a hook calls secret are masked.

Real scripts run in real processes. The tests that switch to another user need root; that
user exists only in an etc/passwd of our own (`accounts.root`), with a uid no account uses.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from wodmail import logs
from wodmail.errors import HookFailed
from wodmail.hooks import HookContext
from wodmail.hooks._process import hook_workspace, run_process
from wodmail.hooks.phases import Hooks
from wodmail.hooks.scriptenv import ScriptShell, script_shell
from wodmail.safefiles import UnsafeFile

WS = "WKSHP-Untrusted101"
ROOT_ONLY = "STOLEN=root-only-content-4711"

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="running a script as another user needs root")


def write_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return path


def logged(**event: str) -> str:
    """The `detail` of one line as the daemon's logging writes it."""
    stream = io.StringIO()
    logs.configure_logging(stream=stream)
    structlog.get_logger("test").info("event", **event)
    return str(json.loads(stream.getvalue())["detail"])


def make_ctx(home: Path, **overrides: object) -> HookContext:
    values: dict[str, object] = {"student": 5, "workshop": WS, "content": WS, "home": home,
                                 "homes": {5: home}}
    values.update(overrides)
    return HookContext(**values)  # type: ignore[arg-type]


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder every user may enter (pytest's own temp root is private to us)."""
    folder = Path(tempfile.mkdtemp(prefix="wodmail-untrusted-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def other_user(world: Path) -> ScriptShell:
    """Scripts run as `hookuser<random>`, a uid no account uses (an etc/passwd of ours)."""
    uid = 61000 + secrets.randbelow(3000)
    name = f"hookuser{secrets.token_hex(3)}"
    etc = world / "accounts" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\n{name}:x:{uid}:{uid}::/nonexistent:"
                                "/bin/sh\n")
    (etc / "group").write_text(f"root:x:0:\n{name}:x:{uid}:\n")
    return script_shell(name, world / "accounts")


@pytest.fixture
def root_only(tmp_path: Path) -> Path:
    """A file only root may read, in a folder only root may enter."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    secret = folder / "secret.env"
    secret.write_text(ROOT_ONLY + "\n")
    secret.chmod(0o600)
    return secret


# --- what a script leaves for root to read ------------------------------------------------


@needs_root
async def test_a_vars_file_swapped_for_a_symlink_fails_without_disclosing_its_target(
    world: Path, other_user: ScriptShell, root_only: Path
) -> None:
    scripts = world / "scripts"
    write_script(scripts, f"create-{WS}.sh", f"""\
echo "running as uid $(id -u)"
rm -f "$WODMAIL_VARS_FILE"
ln -s {root_only} "$WODMAIL_VARS_FILE"
# The output file is the daemon's: the script cannot put a link in its place either.
ln -sf {root_only} "$(dirname "$WODMAIL_VARS_FILE")/../output" 2>/dev/null \\
    || echo "output not replaceable"
""")
    hooks = Hooks.load(public_scripts=scripts, shell=other_user)
    ctx = make_ctx(world)

    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", ctx)

    assert other_user.user is not None
    assert caught.value.message == (
        "WODMAIL_VARS_FILE is a symbolic link: refused, it is not followed")
    assert caught.value.output == (
        f"running as uid {other_user.user.uid}\noutput not replaceable\n")
    assert "root-only-content" not in f"{caught.value} {caught.value.output} {ctx.student_vars}"
    assert "STOLEN" not in ctx.student_vars


@needs_root
async def test_a_vars_file_of_another_owner_is_refused(
    world: Path, other_user: ScriptShell
) -> None:
    # A file of root's the script's user could move in (here: root gives it one to move).
    foreign = world / "drop"
    foreign.mkdir()
    foreign.chmod(0o777)
    (foreign / "vars").write_text(ROOT_ONLY + "\n")
    write_script(world / "scripts", f"create-{WS}.sh",
                 f'mv -f {foreign / "vars"} "$WODMAIL_VARS_FILE"\n')
    hooks = Hooks.load(public_scripts=world / "scripts", shell=other_user)
    ctx = make_ctx(world)

    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", ctx)

    assert caught.value.message.startswith("WODMAIL_VARS_FILE is owned by root (uid 0), mode ")
    assert caught.value.message.endswith(", not the script's user's: refused")
    assert "root-only-content" not in f"{caught.value} {caught.value.output} {ctx.student_vars}"


async def test_a_fifo_in_place_of_the_vars_file_fails_at_once(tmp_path: Path) -> None:
    write_script(tmp_path / "sh", f"create-{WS}.sh",
                 'rm -f "$WODMAIL_VARS_FILE"\nmkfifo "$WODMAIL_VARS_FILE"\n')
    hooks = Hooks.load(public_scripts=tmp_path / "sh", timeout=60)
    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", make_ctx(tmp_path))
    assert caught.value.message == "WODMAIL_VARS_FILE is a fifo, not a regular file: refused"


async def test_a_hard_linked_vars_file_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.env"
    elsewhere.write_text("FROM_ELSEWHERE=1\n")
    write_script(tmp_path / "sh", f"create-{WS}.sh",
                 f'rm -f "$WODMAIL_VARS_FILE"\nln {elsewhere} "$WODMAIL_VARS_FILE"\n')
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    ctx = make_ctx(tmp_path)
    with pytest.raises(HookFailed, match=r"WODMAIL_VARS_FILE has 2 names \(a hard link\)"):
        await hooks.run("create", ctx)
    assert "FROM_ELSEWHERE" not in ctx.student_vars


async def test_a_huge_vars_file_is_refused(tmp_path: Path) -> None:
    write_script(tmp_path / "sh", f"create-{WS}.sh",
                 'head -c 2000000 /dev/zero | tr "\\0" "a" > "$WODMAIL_VARS_FILE"\n')
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    with pytest.raises(HookFailed, match="WODMAIL_VARS_FILE holds over 1048576 bytes"):
        await hooks.run("create", make_ctx(tmp_path))


async def test_a_removed_vars_file_declares_nothing(tmp_path: Path) -> None:
    write_script(tmp_path / "sh", f"create-{WS}.sh", 'rm -f "$WODMAIL_VARS_FILE"\n')
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    ctx = make_ctx(tmp_path, student_vars={"KEPT": "1"})
    (run,) = await hooks.run("create", ctx)
    assert run.ok and ctx.student_vars == {"KEPT": "1"}


# --- the installation files a script's wrapper sources ------------------------------------


@needs_root
@pytest.mark.parametrize(("mode", "owner", "why"), [
    (0o666, 0, "group or others may write it (chmod go-w)"),
    (0o644, 64999, "and must belong to root"),
])
def test_a_wod_sh_root_would_not_trust_is_refused_before_any_script(
    tmp_path: Path, mode: int, owner: int, why: str
) -> None:
    wod_sh = tmp_path / "wod.sh"
    wod_sh.write_text("export WODGROUP=production\n")
    wod_sh.chmod(mode)
    os.chown(wod_sh, owner, owner)
    write_script(tmp_path / "sh", f"create-{WS}.sh", "true\n")
    hooks = Hooks.load(public_scripts=tmp_path / "sh", shell=ScriptShell(None, wod_sh, None))

    with pytest.raises(UnsafeFile) as caught:
        hooks.preflight(("create",), WS)

    message = str(caught.value)
    assert message.startswith(f"{wod_sh} is owned by ")
    assert f"mode {mode:04o}: refused, it would be sourced as root before each hook" in message
    assert why in message and "\n" not in message


@needs_root
async def test_a_private_sh_swapped_after_the_check_is_not_the_one_sourced(
    world: Path, other_user: ScriptShell
) -> None:
    """The wrapper sources the very file the daemon checked (its descriptor), so renaming
    another file into its place between the check and the run changes nothing."""
    assert other_user.user is not None
    private = world / "private"
    private.mkdir(mode=0o755)
    private_sh = private / "wod-private.sh"
    private_sh.write_text("export WODAPIDBUSER=checked\n")
    private_sh.chmod(0o644)
    impostor = private / "impostor.sh"
    impostor.write_text("export WODAPIDBUSER=impostor\n")
    shell = ScriptShell(other_user.user, None, private_sh)
    script = write_script(world / "scripts", f"create-{WS}.sh", 'echo "api=$WODAPIDBUSER"\n')
    with shell.launch(script) as (argv, fds), hook_workspace(shell.user) as workspace:
        impostor.rename(private_sh)  # after the check, before the script starts
        finished = await run_process(argv, env={"PATH": os.defpath}, cwd=world, kill_after=60,
                                     workspace=workspace, user=shell.user, pass_fds=fds)
    assert finished.output == "api=checked\n"


# --- secrets a hook declares ----------------------------------------------------------------


async def test_wodmail_secret_lines_are_masked_and_not_variables(tmp_path: Path) -> None:
    write_script(tmp_path / "sh", f"create-{WS}.sh", """\
token=tok-9f3e2a71c4
echo "WODMAIL_SECRET=$token" >> "$WODMAIL_VARS_FILE"
echo "WODMAIL_SECRET='quoted secret value'" >> "$WODMAIL_VARS_FILE"
echo "HTTPPORT=14151" >> "$WODMAIL_VARS_FILE"
echo "+ curl -H x-access-token:$token https://api.example.org"
echo "and quoted secret value"
""")
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    ctx = make_ctx(tmp_path)
    (run,) = await hooks.run("create", ctx)

    assert run.output == "+ curl -H x-access-token:*** https://api.example.org\nand ***\n"
    assert ctx.student_vars == {"HTTPPORT": "14151"}
    assert logged(detail="the token was tok-9f3e2a71c4") == "the token was ***"


async def test_a_failed_script_s_declared_secret_is_masked_in_its_failure(tmp_path: Path) -> None:
    write_script(tmp_path / "sh", f"create-{WS}.sh", """\
echo "WODMAIL_SECRET=fail-secret-5521" >> "$WODMAIL_VARS_FILE"
echo "login with fail-secret-5521 refused" >&2
exit 4
""")
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", make_ctx(tmp_path))
    assert caught.value.message == "exited with status 4"
    assert caught.value.output == "login with *** refused\n"


async def test_a_secret_too_short_to_mask_fails_the_hook(tmp_path: Path) -> None:
    write_script(tmp_path / "sh", f"create-{WS}.sh",
                 'echo "WODMAIL_SECRET=$UNSET_TOKEN" >> "$WODMAIL_VARS_FILE"\n')
    hooks = Hooks.load(public_scripts=tmp_path / "sh")
    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", make_ctx(tmp_path))
    assert caught.value.message == ("line 1 of WODMAIL_VARS_FILE: a WODMAIL_SECRET of 0 "
                                    "characters cannot be masked (it needs at least 4)")


def handler(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    module = folder / "untrusted101.py"
    module.write_text(f"WORKSHOPS = ({WS!r},)\n\nasync def create(ctx):\n{body}")
    return module


async def test_ctx_secret_masks_a_handler_s_value_in_its_failure(tmp_path: Path) -> None:
    handler(tmp_path / "mods", """\
    token = ctx.secret("handler-token-" + "8d1c")
    await ctx.run("sh", "-c", f"echo using {token}; exit 2")
""")
    hooks = Hooks.load(private_handlers=tmp_path / "mods")
    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", make_ctx(tmp_path))
    assert caught.value.message == "command sh: exited with status 2"
    assert caught.value.output == "using ***\n"
    assert logged(detail="handler-token-8d1c in a message") == "*** in a message"


async def test_ctx_secret_masks_the_message_of_a_raising_handler(tmp_path: Path) -> None:
    handler(tmp_path / "mods", """\
    raise RuntimeError("appliance said no to " + ctx.secret("pw-" + "77aa31"))
""")
    hooks = Hooks.load(private_handlers=tmp_path / "mods")
    with pytest.raises(HookFailed) as caught:
        await hooks.run("create", make_ctx(tmp_path))
    assert caught.value.message == "RuntimeError: appliance said no to ***"
    assert "pw-77aa31" not in caught.value.output  # the traceback


async def test_ctx_secret_refuses_a_value_too_short_to_mask(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    with pytest.raises(ValueError, match="a secret of 3 characters cannot be masked"):
        ctx.secret("abc")
    with pytest.raises(TypeError, match="expected a string, got int"):
        ctx.secret(12345)  # type: ignore[arg-type]
    assert ctx.secret("long-enough") == "long-enough"
