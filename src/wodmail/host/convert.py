"""A student's notebooks to PDF or Word, as `wod-test-action.sh PDF|WORD` made them.

The old tool sourced the JupyterHub environment (JPHUB/bin/activate) and ran, for each
`<students_dir>/studentN/<WS>/*.ipynb`, `jupyter nbconvert --to pdf NB` or `jupyter nbconvert
--to=docx NB --output NB.docx` (the `docx` exporter comes from jupyter-docx-bundler, which the
WoD installer puts in JPHUB), then `chmod 644` on the results.

The notebooks are the student's, and so hostile input: every file operation, the walk into
the workshop folder included, and the converter itself (nbconvert reads the student's
~/.jupyter config, LaTeX runs on the notebook's text) run as the student, never as root.
Whatever the student planted (a symbolic link as the folder or as an output file) is then
followed with the student's rights only. Results are 0644 and the student's, beside the
notebooks. The converter runs in its own process group, killed at the timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from wodmail.errors import AccountError
from wodmail.userdb import PasswdEntry

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_KEPT = 16 * 1024

# Per notebook: nbconvert's own output goes to stderr, one status line per notebook to
# stdout (`ok<TAB>result` or `failed<TAB>notebook`). $1 the folder, $2 nbconvert, $3 the
# exporter, $4 the results' extension.
_SCRIPT = r"""
cd -P -- "$1" || exit 3
shopt -s nullglob
for nb in *.ipynb; do
  base=${nb%.ipynb}
  if "$2" --to="$3" --output="$base" "./$nb" >&2 && chmod 0644 -- "$base.$4"; then
    printf 'ok\t%s\n' "$base.$4"
  else
    printf 'failed\t%s\n' "$nb"
  fi
done
"""


# Exit 0 when an nbconvert exporter named $1 is installed, 1 when not, 2 when it cannot tell.
_HAS_EXPORTER = """
import sys
try:
    from importlib.metadata import entry_points
    found = entry_points(group="nbconvert.exporters", name=sys.argv[1])
except Exception:
    sys.exit(2)
sys.exit(0 if found else 1)
"""
PROBE_SECONDS = 60.0


@dataclass(frozen=True)
class Format:
    verb: str
    exporter: str
    extension: str
    tools: tuple[str, ...]  # besides nbconvert, on the converter's PATH
    debian: tuple[str, ...]  # the Debian packages that bring them
    python: tuple[str, ...] = ()  # Python packages the exporter needs in the environment


class Formats(Enum):
    # nbconvert's PDF is LaTeX: pandoc turns markdown cells into LaTeX, xelatex typesets
    # (the packages are nbconvert's own install instructions).
    PDF = Format("PDF", "pdf", "pdf", ("pandoc", "xelatex"),
                 ("pandoc", "texlive-xetex", "texlive-fonts-recommended", "texlive-plain-generic"))
    WORD = Format("WORD", "docx", "docx", ("pandoc",), ("pandoc",),
                  ("jupyter-docx-bundler",))


@dataclass
class Conversion:
    """What one student's conversion made: results written, notebooks that failed."""

    folder: Path
    made: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    output: str = ""  # the converter's own output (the tail), for a failure


@dataclass(frozen=True)
class Converter:
    """nbconvert of the Python environment `env` (JPHUB: the JupyterHub venv)."""

    env: Path

    @property
    def nbconvert(self) -> Path:
        return self.env / "bin" / "jupyter-nbconvert"

    @property
    def path(self) -> str:
        return f"{self.env / 'bin'}:{SYSTEM_PATH}"

    def missing(self, fmt: Format) -> str | None:
        """One line saying what to install for `fmt` (nbconvert, the system tools), or None.
        Only files are looked at: nothing of the environment runs as root."""
        if not os.access(self.nbconvert, os.X_OK):
            wanted = " ".join(("nbconvert", *fmt.python))
            return (f"{fmt.verb} needs nbconvert in the JupyterHub environment {self.env}: "
                    f"install it there ({self.env / 'bin' / 'pip'} install {wanted})")
        absent = [tool for tool in fmt.tools if shutil.which(tool, path=self.path) is None]
        if absent:
            return (f"{fmt.verb} needs {' and '.join(absent)}, not found on {self.path}: "
                    f"apt-get install {' '.join(fmt.debian)}")
        return None

    def missing_exporter(self, fmt: Format, student: PasswdEntry) -> str | None:
        """One line saying what to install when the environment has no exporter for `fmt`
        (asked of its Python, as `student`: the environment is the WoD user's, never run as
        root), or None. An environment that cannot tell is left to nbconvert to judge."""
        if not fmt.python:
            return None
        try:
            probe = subprocess.run(
                [str(self.env / "bin" / "python"), "-c", _HAS_EXPORTER, fmt.exporter],
                env=self._environment(student), cwd="/", stdin=subprocess.DEVNULL,
                capture_output=True, timeout=PROBE_SECONDS, check=False, **_as_student(student),
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode != 1:
            return None
        return (f"{fmt.verb} needs nbconvert's {fmt.exporter} exporter in {self.env}: install "
                f"it there ({self.env / 'bin' / 'pip'} install {' '.join(fmt.python)})")

    def convert(self, fmt: Format, folder: Path, student: PasswdEntry,
                timeout: float) -> Conversion:
        """Converts every `*.ipynb` of `folder` as `student` (wodmail must be root, or be
        that student)."""
        done = Conversion(folder)
        try:
            out, err, code = self._run(fmt, folder, student, timeout)
        except subprocess.TimeoutExpired:
            done.output = f"the converter did not finish within {timeout:g} s (killed)"
            done.failed.append("(timeout)")
            return done
        for line in out.splitlines():
            status, _, name = line.partition("\t")
            (done.made if status == "ok" else done.failed).append(name)
        done.output = err[-OUTPUT_KEPT:]
        if code == 3:
            done.failed.append(f"(cannot enter {folder} as {student.name})")
        return done

    def _environment(self, student: PasswdEntry) -> dict[str, str]:
        """What `source JPHUB/bin/activate` gave the old tool, for the student."""
        return {"PATH": self.path, "HOME": str(student.home), "USER": student.name,
                "LOGNAME": student.name, "LANG": "C.UTF-8", "VIRTUAL_ENV": str(self.env),
                "JUPYTER_PLATFORM_DIRS": "1"}

    def _run(self, fmt: Format, folder: Path, student: PasswdEntry,
             timeout: float) -> tuple[str, str, int]:
        env = self._environment(student)
        argv = ["bash", "--noprofile", "--norc", "-c", _SCRIPT, "wodmail-convert", str(folder),
                str(self.nbconvert), fmt.exporter, fmt.extension]
        with subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True, umask=0o022,
                              **_as_student(student)) as process:
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise
        text = {"encoding": "utf-8", "errors": "replace"}
        return out.decode(**text), err.decode(**text), process.returncode


def _as_student(student: PasswdEntry) -> dict[str, object]:
    """subprocess arguments that make the child the student: root switches to its uid and
    gid, with no supplementary groups; anyone else must be the student already."""
    if os.geteuid() == 0:
        return {"user": student.uid, "group": student.gid, "extra_groups": []}
    if os.geteuid() != student.uid:
        raise AccountError(f"the converter runs as {student.name} (uid {student.uid}), never "
                           "as anyone else: run this as root")
    return {}


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()
