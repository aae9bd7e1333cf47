"""wodmail.host.accounts on sandbox roots and homes under tmp_path, with the real system tools.

Nothing here touches the host's accounts: passwords go to `<tmp>/root/etc/shadow` through
`chpasswd -R`, homes are temp dirs, and the processes ended belong to a uid no host user
has (PROCESS_UID), started for the test with setpriv.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from support.sha512crypt import sha512_crypt_matches
from wodmail.errors import AccountError
from wodmail.host import accounts
from wodmail.host.accounts import (
    create_ssh_keypair,
    end_processes,
    give_to,
    reset_home,
    restore_skel,
    set_linux_password,
    wipe_home,
)
from wodmail.userdb import UserDb

UIDS = {"student1": 61001, "student2": 61002, "student3": 61003, "wodadmin": 61100}
ADMIN_UID = UIDS["wodadmin"]
PROCESS_UID = 64711  # not a host user, and no other test's: end_processes kills them all
PASSWORD = "Tr1cky:pass$word!"
ROOT = os.geteuid() == 0
needs_root_chpasswd = pytest.mark.skipif(
    not ROOT, reason="root only: chpasswd -R chroots into the sandbox root")
needs_root_chown = pytest.mark.skipif(
    not ROOT, reason="root only: files are given to other users' uids (chown)")
needs_root_kill = pytest.mark.skipif(
    not ROOT, reason="root only: the processes run as another uid (setpriv) and are killed")


# ---------------------------------------------------------------- helpers and fixtures


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Path:
    """A root dir holding only etc/passwd, etc/shadow and etc/group."""
    root = tmp_path / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    shadow = ["root:*:19000:0:99999:7:::"]
    group = ["root:x:0:"]
    for name, uid in UIDS.items():
        passwd.append(f"{name}:x:{uid}:{uid}:{name}:/home/{name}:/bin/bash")
        shadow.append(f"{name}:!:19000:0:99999:7:::")
        group.append(f"{name}:x:{uid}:")
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "shadow").write_text("\n".join(shadow) + "\n")
    (etc / "shadow").chmod(0o640)
    (etc / "group").write_text("\n".join(group) + "\n")
    return root


@pytest.fixture
def host_shadow_unchanged() -> AsyncIterator[None]:
    """Fails the test if the host's /etc/shadow changed while it ran."""
    before = hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest()
    yield
    assert hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest() == before


def shadow_hash(root: Path, user: str) -> str:
    for line in (root / "etc" / "shadow").read_text().splitlines():
        name, hashed, *_ = line.split(":")
        if name == user:
            return hashed
    raise AssertionError(f"{user} not in the sandbox shadow")


def hash_matches(password: str, hashed: str) -> bool:
    return sha512_crypt_matches(password, hashed)


def acl_of(path: Path) -> list[str]:
    done = subprocess.run(
        ["getfacl", "-n", "-p", "--", str(path)], capture_output=True, text=True, check=True
    )
    return [line for line in done.stdout.splitlines() if line and not line.startswith("#")]


@pytest.fixture
def acl_home(tmp_path: Path) -> Path:
    """A home on a file system where setfacl works, else the test is skipped."""
    home = tmp_path / "acl-home"
    home.mkdir()
    setfacl = shutil.which("setfacl")
    probe = tmp_path / "acl-probe"
    probe.touch()
    if setfacl is None or shutil.which("getfacl") is None:
        pytest.skip("setfacl/getfacl not installed (acl package)")
    done = subprocess.run([setfacl, "-m", f"u:{ADMIN_UID}:r", str(probe)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"no ACL support under {tmp_path}: {done.stderr.decode().strip()}")
    return home


def make_tree(home: Path, outside: Path) -> None:
    """Dotfiles, nested dirs, a read-only dir, and symlinks pointing out of the home."""
    (home / ".bashrc").write_text("old rc\n")
    (home / ".cache" / "deep" / "deeper").mkdir(parents=True)
    (home / ".cache" / "deep" / "deeper" / "blob").write_bytes(b"x" * 100)
    (home / "WKSHP-Old" / "sub").mkdir(parents=True)
    (home / "WKSHP-Old" / "sub" / "nb.ipynb").write_text("{}")
    (home / "WKSHP-Old" / "sub").chmod(0o500)
    (home / "notes.txt").write_text("notes")
    outside.mkdir(exist_ok=True)
    (outside / "precious.txt").write_text("keep me")
    (home / "link-to-file").symlink_to(outside / "precious.txt")
    (home / "link-to-dir").symlink_to(outside)
    (home / ".cache" / "link-up").symlink_to(outside)


# ---------------------------------------------------------------- UserDb


def test_userdb_resolves_users_and_groups(sandbox_root: Path) -> None:
    users = UserDb(sandbox_root)

    student = users.user("student2")
    assert (student.uid, student.gid, student.home) == (61002, 61002, Path("/home/student2"))
    assert users.uid("wodadmin") == ADMIN_UID
    assert users.gid("student3") == 61003


def test_userdb_unknown_names_name_the_file(sandbox_root: Path) -> None:
    users = UserDb(sandbox_root)

    with pytest.raises(AccountError, match=f"^no user student7 in {sandbox_root}/etc/passwd$"):
        users.uid("student7")
    with pytest.raises(AccountError, match=f"^no group docker in {sandbox_root}/etc/group$"):
        users.gid("docker")


def test_userdb_reports_a_missing_file_and_a_broken_line(tmp_path: Path) -> None:
    with pytest.raises(AccountError, match=f"cannot read {tmp_path}/etc/passwd"):
        UserDb(tmp_path).uid("student1")

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("student1:x:abc:61001::/home/student1:/bin/sh\n")
    with pytest.raises(AccountError, match="line 1: uid 'abc' is not a number"):
        UserDb(tmp_path).uid("student1")


# ---------------------------------------------------------------- Linux password


@needs_root_chpasswd
async def test_password_is_set_in_the_sandbox_shadow_as_sha512(
    sandbox_root: Path, host_shadow_unchanged: None
) -> None:
    await set_linux_password("student2", PASSWORD, sandbox_root)

    hashed = shadow_hash(sandbox_root, "student2")
    assert hashed.startswith("$6$")
    assert hash_matches(PASSWORD, hashed)
    assert not hash_matches("another one", hashed)
    assert shadow_hash(sandbox_root, "student1") == "!"  # neighbours untouched


@needs_root_chpasswd
async def test_setting_again_replaces_the_password(sandbox_root: Path) -> None:
    await set_linux_password("student1", "first-one", sandbox_root)
    await set_linux_password("student1", "second-one", sandbox_root)

    hashed = shadow_hash(sandbox_root, "student1")
    assert hash_matches("second-one", hashed)
    assert not hash_matches("first-one", hashed)


@needs_root_chpasswd
async def test_password_reaches_chpasswd_on_stdin_never_on_its_command_line(
    sandbox_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wrapper first on PATH records chpasswd's arguments, then runs the real one.
    real = shutil.which("chpasswd") or shutil.which("chpasswd", path=accounts.TOOL_PATH)
    assert real is not None
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    argv_file = tmp_path / "argv"
    spy = spy_dir / "chpasswd"
    spy.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv_file}\nexec {real} "$@"\n')
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy_dir}:{os.environ['PATH']}")

    await set_linux_password("student3", PASSWORD, sandbox_root)

    argv = argv_file.read_text()
    assert argv.split() == ["-c", "SHA512", "-R", str(sandbox_root)]
    assert PASSWORD not in argv
    assert hash_matches(PASSWORD, shadow_hash(sandbox_root, "student3"))


@needs_root_chpasswd
async def test_chpasswd_failure_is_reported_without_the_password(sandbox_root: Path) -> None:
    with pytest.raises(AccountError) as caught:
        await set_linux_password("student7", PASSWORD, sandbox_root)

    message = str(caught.value)
    assert "student7" in message
    assert "does not exist" in message  # chpasswd's own words
    assert PASSWORD not in message


@pytest.mark.parametrize(
    ("user", "password", "complaint"),
    [
        ("student1", "two\nlines", "line break"),
        ("student1", "", "empty password"),
        ("student1:x", PASSWORD, "invalid user name"),
        ("", PASSWORD, "invalid user name"),
    ],
)
async def test_unsafe_chpasswd_input_is_refused_before_running_it(
    sandbox_root: Path, user: str, password: str, complaint: str
) -> None:
    before = (sandbox_root / "etc" / "shadow").read_text()

    with pytest.raises(AccountError, match=complaint):
        await set_linux_password(user, password, sandbox_root)
    assert (sandbox_root / "etc" / "shadow").read_text() == before


async def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(AccountError, match=f"root {tmp_path}/nowhere is not a directory"):
        await set_linux_password("student1", PASSWORD, tmp_path / "nowhere")


# ---------------------------------------------------------------- wipe and skeleton


@pytest.mark.skipif(not ROOT, reason="root only: the home holds a read-only folder, which only "
                    "root (as the daemon runs) can empty")
def test_wipe_empties_the_home_but_spares_what_symlinks_point_at(tmp_path: Path) -> None:
    home = tmp_path / "student1"
    home.mkdir()
    outside = tmp_path / "outside"
    make_tree(home, outside)

    wipe_home(home)

    assert home.is_dir()
    assert list(home.iterdir()) == []
    assert (outside / "precious.txt").read_text() == "keep me"


def test_wipe_of_an_empty_home_is_fine(tmp_path: Path) -> None:
    wipe_home(tmp_path)
    wipe_home(tmp_path)

    assert list(tmp_path.iterdir()) == []


def test_wipe_refuses_symlinks_files_and_missing_homes(tmp_path: Path) -> None:
    real_home = tmp_path / "real"
    real_home.mkdir()
    (real_home / ".profile").write_text("x")
    (tmp_path / "link").symlink_to(real_home)
    (tmp_path / "file").write_text("x")

    with pytest.raises(AccountError, match="is a symlink"):
        wipe_home(tmp_path / "link")
    with pytest.raises(AccountError, match="is not a directory"):
        wipe_home(tmp_path / "file")
    with pytest.raises(AccountError, match="is not a directory"):
        wipe_home(tmp_path / "missing")
    assert (real_home / ".profile").exists()


def test_wipe_refuses_the_root_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand a temp dir in for "/": trying this on the real root would be reckless.
    fake_root = tmp_path / "fake-root"
    (fake_root / "etc").mkdir(parents=True)
    monkeypatch.setattr(accounts, "SYSTEM_ROOT", fake_root)

    with pytest.raises(AccountError, match="root directory"):
        wipe_home(fake_root)
    with pytest.raises(AccountError, match="root directory"):
        wipe_home(fake_root / "etc" / "..")
    assert (fake_root / "etc").is_dir()


def test_skeletons_are_layered_later_ones_winning(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    public = tmp_path / "skel-public"
    private = tmp_path / "skel-private"
    (public / ".config" / "app").mkdir(parents=True)
    (public / ".bashrc").write_text("public rc\n")
    (public / ".profile").write_text("public profile\n")
    (public / ".config" / "app" / "a.conf").write_text("a")
    (public / "bin-tool").write_text("#!/bin/sh\n")
    (public / "bin-tool").chmod(0o755)
    (private / ".config" / "app").mkdir(parents=True)
    (private / ".bashrc").write_text("private rc\n")
    (private / ".config" / "app" / "b.conf").write_text("b")
    (private / ".vimrc").symlink_to("/etc/vim/vimrc")

    restore_skel(home, [public, tmp_path / "no-such-skel", private])

    assert (home / ".bashrc").read_text() == "private rc\n"
    assert (home / ".profile").read_text() == "public profile\n"
    assert sorted(p.name for p in (home / ".config" / "app").iterdir()) == ["a.conf", "b.conf"]
    assert stat.S_IMODE((home / "bin-tool").stat().st_mode) == 0o755
    assert os.readlink(home / ".vimrc") == "/etc/vim/vimrc"
    assert (public / ".bashrc").read_text() == "public rc\n"  # sources untouched


def test_skeleton_replaces_a_file_by_a_dir_and_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    first = tmp_path / "first"
    second = tmp_path / "second"
    (first / ".thing").mkdir(parents=True)
    (first / ".thing" / "inside").write_text("x")
    (first / ".other").write_text("file")
    second.mkdir()
    (second / ".thing").write_text("now a file")
    (second / ".other").mkdir()

    restore_skel(home, [first, second])

    assert (home / ".thing").read_text() == "now a file"
    assert (home / ".other").is_dir()


# ---------------------------------------------------------------- ssh key pair


def load_pair(home: Path) -> tuple[rsa.RSAPrivateKey, str]:
    private = serialization.load_ssh_private_key((home / ".ssh" / "id_rsa").read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return private, (home / ".ssh" / "id_rsa.pub").read_text()


def test_keypair_is_openssh_rsa_without_passphrase_and_private(tmp_path: Path) -> None:
    public_line = create_ssh_keypair(tmp_path, "student1@backend")

    private, public_file = load_pair(tmp_path)
    assert (
        (tmp_path / ".ssh" / "id_rsa")
        .read_bytes()
        .startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    )
    public = serialization.load_ssh_public_key(public_file.encode())
    assert public.public_numbers() == private.public_key().public_numbers()
    assert public_file == public_line + "\n"
    assert public_line.startswith("ssh-rsa ") and public_line.endswith(" student1@backend")
    assert stat.S_IMODE((tmp_path / ".ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / ".ssh" / "id_rsa").stat().st_mode) == 0o600


def test_ssh_keygen_reads_the_key(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    public_line = create_ssh_keypair(tmp_path, "student1@backend")

    # ssh-keygen also refuses a private key whose mode is too open.
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(tmp_path / ".ssh" / "id_rsa")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert derived[:2] == public_line.split()[:2]


def test_keypair_is_replaced_on_a_second_run(tmp_path: Path) -> None:
    create_ssh_keypair(tmp_path, "c")
    first, _ = load_pair(tmp_path)
    (tmp_path / ".ssh" / "id_rsa").chmod(0o644)

    create_ssh_keypair(tmp_path, "c")

    second, _ = load_pair(tmp_path)
    assert second.private_numbers() != first.private_numbers()
    assert stat.S_IMODE((tmp_path / ".ssh" / "id_rsa").stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / ".ssh").iterdir()) == ["id_rsa", "id_rsa.pub"]


def test_keypair_refuses_an_ssh_dir_that_is_a_symlink(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "someone-elses-ssh"
    elsewhere.mkdir()
    (elsewhere / "id_rsa").write_text("their key")
    (home / ".ssh").symlink_to(elsewhere)

    with pytest.raises(AccountError, match="not a plain directory"):
        create_ssh_keypair(home, "c")
    assert (elsewhere / "id_rsa").read_text() == "their key"


# ---------------------------------------------------------------- ownership and ACLs


@needs_root_chown
def test_give_to_chowns_the_tree_but_not_what_symlinks_point_at(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "outside"
    make_tree(home, outside)

    give_to([home / ".cache", home / "WKSHP-Old", home / "link-to-file"], 61001, 61002)

    for top in (home / ".cache", home / "WKSHP-Old"):
        for path in [top, *top.rglob("*")]:
            owner = path.lstat()
            assert (owner.st_uid, owner.st_gid) == (61001, 61002), path
    assert (home / "link-to-file").lstat().st_uid == 61001
    assert (home / ".bashrc").stat().st_uid == 0  # not given
    for path in [outside, *outside.iterdir()]:
        assert path.stat().st_uid == 0, path


@needs_root_chown
def test_give_to_grants_the_admin_rwx_acls(acl_home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    make_tree(acl_home, outside)
    workshop = acl_home / "WKSHP-Old"

    give_to([workshop, acl_home / ".bashrc"], 61001, 61001, admin_uid=ADMIN_UID)

    for directory in (workshop, workshop / "sub"):
        entries = acl_of(directory)
        assert f"user:{ADMIN_UID}:rwx" in entries
        assert f"default:user:{ADMIN_UID}:rwx" in entries
    for file in (workshop / "sub" / "nb.ipynb", acl_home / ".bashrc"):
        assert f"user:{ADMIN_UID}:rwx" in acl_of(file)
    assert not any(str(ADMIN_UID) in entry for entry in acl_of(outside / "precious.txt"))


@needs_root_chown
def test_give_to_without_admin_sets_no_acl(acl_home: Path) -> None:
    (acl_home / "nb.ipynb").write_text("{}")

    give_to([acl_home / "nb.ipynb"], 61001, 61001)

    assert not any(str(ADMIN_UID) in entry for entry in acl_of(acl_home / "nb.ipynb"))


@needs_root_chown
def test_give_to_without_setfacl_warns_once_and_still_chowns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(accounts, "TOOL_PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(accounts, "_acl_warnings_given", set())
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")

    with capture_logs() as logs:
        give_to([tmp_path / "a"], 61001, 61001, admin_uid=ADMIN_UID)
        give_to([tmp_path / "b"], 61001, 61001, admin_uid=ADMIN_UID)

    warnings_logged = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings_logged) == 1
    assert "setfacl not found" in warnings_logged[0]["event"]
    assert (tmp_path / "b").stat().st_uid == 61001


def test_give_to_names_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(AccountError, match=f"{tmp_path}/ghost"):
        give_to([tmp_path / "ghost"], 61001, 61001)


@needs_root_chown
def test_give_to_closes_the_tree_to_other_users_and_keeps_group_bits(
    acl_home: Path, tmp_path: Path
) -> None:
    make_tree(acl_home, tmp_path / "outside")
    workshop = acl_home / "WKSHP-Old"
    (workshop / "sub" / "nb.ipynb").chmod(0o664)
    (workshop / "run.sh").write_text("echo\n")
    (workshop / "run.sh").chmod(0o755)

    give_to([workshop], 61001, 61001, admin_uid=ADMIN_UID)

    notebook = workshop / "sub" / "nb.ipynb"
    assert stat.S_IMODE((workshop / "run.sh").stat().st_mode) == 0o770  # mask rwx, as ls shows
    assert "group::r-x" in acl_of(workshop / "run.sh")
    assert "group::rw-" in acl_of(notebook)
    for path in (workshop, workshop / "sub", notebook):
        assert "other::---" in acl_of(path), path
    # Files made later in a deployed folder inherit no access for others either.
    assert "default:other::---" in acl_of(workshop / "sub")
    assert stat.S_IMODE((tmp_path / "outside" / "precious.txt").stat().st_mode) == 0o644


# ---------------------------------------------------------------- the home itself


def home_with_acl(home: Path, mode: int, acl: str) -> None:
    """A home as the WoD installer leaves it: its mode, then named ACL entries."""
    home.chmod(mode)
    subprocess.run(["setfacl", "-m", acl, str(home)], check=True)


def test_secure_home_closes_an_installer_home_and_keeps_its_acl_mask_rwx(
    acl_home: Path,
) -> None:
    # The installer: mode 0755, then WODUSER rwx through an ACL (the mask makes it 0775).
    home_with_acl(acl_home, 0o755, f"u:{ADMIN_UID}:rwx,g:{ADMIN_UID}:rx")
    assert stat.S_IMODE(acl_home.stat().st_mode) == 0o775

    repaired = accounts.secure_home(acl_home, os.getuid(), os.getgid())

    assert repaired == ["mode 0775 -> 0770"]
    assert stat.S_IMODE(acl_home.stat().st_mode) == 0o770
    entries = acl_of(acl_home)
    # WODUSER's entry and the mask are untouched: no "#effective:r-x" restriction.
    assert f"user:{ADMIN_UID}:rwx" in entries
    assert f"group:{ADMIN_UID}:r-x" in entries
    assert "mask::rwx" in entries
    assert "group::r-x" in entries
    assert "other::---" in entries


def test_secure_home_gives_the_acl_mask_back_where_a_chmod_lowered_it(acl_home: Path) -> None:
    # What the previous repair did to installer homes: chmod 0755 made the mask r-x.
    home_with_acl(acl_home, 0o755, f"u:{ADMIN_UID}:rwx")
    acl_home.chmod(0o755)
    assert "mask::r-x" in acl_of(acl_home)

    repaired = accounts.secure_home(acl_home, os.getuid(), os.getgid())

    assert repaired == ["mode 0755 -> 0770 (ACL mask r-x -> rwx: its named entries work again)"]
    assert "mask::rwx" in acl_of(acl_home)
    assert f"user:{ADMIN_UID}:rwx" in acl_of(acl_home)
    assert "other::---" in acl_of(acl_home)


def test_secure_home_leaves_a_closed_acl_home_alone(acl_home: Path) -> None:
    home_with_acl(acl_home, 0o2770, f"u:{ADMIN_UID}:rwx")
    before = acl_of(acl_home)

    assert accounts.secure_home(acl_home, os.getuid(), os.getgid()) == []
    assert acl_of(acl_home) == before
    assert stat.S_IMODE(acl_home.stat().st_mode) == 0o2770


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(0o777, 0o750), (0o755, 0o750), (0o2775, 0o2750), (0o750, 0o750), (0o700, 0o700)],
)
def test_secure_home_without_acl_closes_it_to_others_and_group_writes(
    tmp_path: Path, mode: int, expected: int
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(mode)

    repaired = accounts.secure_home(home, os.getuid(), os.getgid())

    assert stat.S_IMODE(home.stat().st_mode) == expected
    assert repaired == ([] if mode == expected else [f"mode {mode:04o} -> {expected:04o}"])


# ---------------------------------------------------------------- CREATE step 3 as a whole


@needs_root_chown
async def test_reset_home_leaves_skeleton_and_keys_owned_by_the_student(
    acl_home: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    make_tree(acl_home, outside)
    public = tmp_path / "skel"
    public.mkdir()
    (public / ".bashrc").write_text("fresh rc\n")
    (public / ".jupyter").mkdir()
    (public / ".jupyter" / "conf.py").write_text("c = 1\n")

    await reset_home(
        acl_home, [public], uid=61001, gid=61001, admin_uid=ADMIN_UID, key_comment="student1"
    )

    assert_fresh_home(acl_home, outside)


def assert_fresh_home(acl_home: Path, outside: Path) -> None:
    assert sorted(p.name for p in acl_home.iterdir()) == [".bashrc", ".jupyter", ".ssh"]
    assert (acl_home / ".bashrc").read_text() == "fresh rc\n"
    for path in acl_home.rglob("*"):
        assert (path.lstat().st_uid, path.lstat().st_gid) == (61001, 61001), path
    assert f"default:user:{ADMIN_UID}:rwx" in acl_of(acl_home / ".jupyter")
    # ssh ignores a private key whose mode shows any group or other bits; an ACL mask
    # would show up there.
    private_key = acl_home / ".ssh" / "id_rsa"
    assert stat.S_IMODE(private_key.stat().st_mode) == 0o600
    assert not any(str(ADMIN_UID) in entry for entry in acl_of(private_key))
    assert (outside / "precious.txt").read_text() == "keep me"


# ---------------------------------------------------------------- processes


def live_processes_of(uid: int) -> list[str]:
    """`ps` lines (pid, state, command) of uid's processes, zombies left out."""
    done = subprocess.run(
        ["ps", "-U", str(uid), "-o", "pid=,stat=,args="], capture_output=True, text=True
    )
    return [line for line in done.stdout.splitlines() if line.split()[1][0] != "Z"]


async def wait_for_processes(uid: int, count: int) -> None:
    for _ in range(200):
        if len(live_processes_of(uid)) >= count:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"test setup: {count} processes of uid {uid} did not start")


def ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@needs_root_kill
async def test_end_processes_terms_then_kills_the_stubborn(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    as_student = ["setpriv", f"--reuid={PROCESS_UID}", f"--regid={PROCESS_UID}", "--clear-groups"]
    polite = await asyncio.create_subprocess_exec(*as_student, "sleep", "300", cwd=tmp_path)
    stubborn = await asyncio.create_subprocess_exec(
        *as_student, "sh", "-c", 'trap "" TERM; sleep 300', cwd=tmp_path
    )
    try:
        await wait_for_processes(PROCESS_UID, 3)  # sleep, sh, and sh's sleep
        # Under load the shell may be counted before its trap is set: wait for SIGTERM to
        # show in its ignored-signals mask (setpriv exec'd sh in the same pid).
        for _ in range(500):
            if ignores_sigterm(stubborn.pid):
                break
            await asyncio.sleep(0.01)

        ended = await end_processes(PROCESS_UID, grace=0.5)

        assert ended == 3
        assert await asyncio.wait_for(polite.wait(), 10) == -15  # SIGTERM was enough
        # It needed SIGKILL. The kills go out one pid at a time: when sh's sleep is killed
        # first, sh may reap it and exit 128+9 before its own SIGKILL arrives.
        assert await asyncio.wait_for(stubborn.wait(), 10) in (-signal.SIGKILL,
                                                                128 + signal.SIGKILL)
        assert live_processes_of(PROCESS_UID) == []
    finally:  # if end_processes failed, leave nothing behind (sh's sleep included)
        for line in live_processes_of(PROCESS_UID):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        for process in (polite, stubborn):
            await asyncio.wait_for(process.wait(), 10)


async def test_end_processes_with_nothing_running_returns_zero() -> None:
    assert await end_processes(PROCESS_UID + 1, grace=0.1) == 0


async def test_end_processes_refuses_root() -> None:
    with pytest.raises(AccountError, match="uid 0"):
        await end_processes(0)
