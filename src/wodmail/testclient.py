"""`wodmail-test VERB WORKSHOP [MIN[,MAX]]`: send test orders, like the old wod-test-action.sh.

One mail per student (customer id 0: no participant), except RESET, which sends one mail
for the whole `MIN,MAX` range; PURGE refuses a range. With --wait, waits for each order's
result in the journal and prints it (for a CREATE, the student's new password).

PDF and WORD send nothing: as the old tool did on the backend, they convert the notebooks of
`<students_dir>/studentN/WORKSHOP` with the JupyterHub environment's nbconvert (JPHUB), as
the student (`wodmail.host.convert`), for each student of the range.
"""

from __future__ import annotations

import argparse
import logging
import re
import smtplib
import sys
import time
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from wodmail.cli import render_job, terminal_safe
from wodmail.config import Config, describe_location, load_base_variables, load_config
from wodmail.errors import ConfigurationError, TemplateError, WodmailError
from wodmail.host.convert import Converter, Format, Formats
from wodmail.journal.store import JournalReader
from wodmail.logs import configure_logging
from wodmail.orders import is_workshop_name
from wodmail.templating.renderer import Renderer
from wodmail.userdb import UserDb

VERBS = ("CREATE", "CLEANUP", "RESET", "PURGE")
CONVERSIONS = {fmt.value.verb: fmt.value for fmt in Formats}
JOB_REPLY = re.compile(rb"job (\d+)")


class UsageError(Exception):
    pass


def parse_range(text: str | None, config: Config) -> tuple[int, int]:
    if text is None:
        return config.students.min, config.students.min
    match = re.fullmatch(r"(\d+)(?:,(\d+))?", text.strip())
    if not match:
        raise UsageError(f"student range must be MIN or MIN,MAX, not {text!r}")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if low > high:
        raise UsageError(f"MIN ({low}) is greater than MAX ({high})")
    return low, high


def plan_mails(verb: str, workshop: str, low: int, high: int) -> list[tuple[str, str]]:
    """(subject, body) of each mail to send, by the old script's range rules."""
    if verb == "PURGE" and low != high:
        raise UsageError("PURGE takes one student, not a range")
    if verb == "RESET":
        ids = f"{low},{high}" if low != high else str(low)
        return [(f"RESET {ids} 0", workshop)]
    return [(f"{verb} {n} 0", workshop) for n in range(low, high + 1)]


EXIT_CODES = """\
PDF and WORD (on the backend, as root) convert each student's WORKSHOP/*.ipynb with the
JupyterHub environment's nbconvert (JPHUB), as the student, beside the notebooks.

exit codes:
  0  every order was accepted (and, with --wait, is done); PDF, WORD: every notebook converted
  1  an order was refused or failed, the daemon could not be reached, or the config is bad;
     PDF, WORD: a notebook not converted, or the converter or a tool missing (the line says
     what to install)
  2  bad command-line arguments
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wodmail-test", description=__doc__.split("\n")[0], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("verb", type=str.upper,
                        help="CREATE, CLEANUP, RESET or PURGE; or PDF or WORD (convert the "
                             "students' notebooks, on the backend, as root)")
    parser.add_argument("workshop", help="e.g. WKSHP-API101 or CHLG-API101")
    parser.add_argument("range", nargs="?", help="MIN or MIN,MAX (default: students.min)")
    parser.add_argument("--config", "-c", type=Path, default=None, metavar="FILE",
                        help="the daemon's config (default: $WODMAIL_CONFIG, else "
                        "/etc/wodmail/wodmail.yml when it exists, else the defaults)")
    parser.add_argument("--host", default=None,
                        help="default: listen.host of the config (a loopback one of them)")
    parser.add_argument("--port", type=int, default=None, help="default: listen.port")
    parser.add_argument("--sender", default=None,
                        help="envelope and From address (default: the first sender the daemon"
                             " allows: allowed_senders, else WODSENDER)")
    parser.add_argument("--wait", action="store_true", help="wait for each result and print it")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds --wait waits (PDF, WORD: a student's conversion may take)")
    return parser


def default_sender(config: Config, variables: dict[str, Any] | None = None) -> str:
    """The sender the daemon allows (as the old tool sent as WODSENDER)."""
    senders = config.senders(load_base_variables(config) if variables is None else variables)
    return senders[0] if senders else "wodmail-test@localhost"


def default_recipient(config: Config, variables: dict[str, Any] | None = None) -> str:
    """The order mailbox as the old tool addressed it: WODUSER@WODBEFQDN of the installation
    (mail to anyone else would be relayed, not taken as an order, when a relay is set)."""
    if variables is None:
        variables = load_base_variables(config)
    user = variables.get("WODUSER") or config.accounts.admin_user or "wodadmin"
    domain = variables.get("WODBEFQDN") or "localhost"
    return f"{user}@{domain}"


def send(config: Config, args: argparse.Namespace, mails: list[tuple[str, str]]) -> list[int]:
    host = args.host or config.listen.local_host
    port = args.port or config.listen.port
    variables = load_base_variables(config)  # the installation's layers: read once
    sender = args.sender or default_sender(config, variables)
    recipient = default_recipient(config, variables)
    job_ids: list[int] = []
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        for subject, body in mails:
            message = EmailMessage()
            message["From"] = sender
            message["To"] = recipient
            message["Subject"] = subject
            message.set_content(body)
            smtp.ehlo()
            smtp.mail(sender)
            smtp.rcpt(recipient)
            code, reply = smtp.data(message.as_bytes())
            print(f"{subject}: {code} {reply.decode('utf-8', 'replace')}")
            match = JOB_REPLY.search(reply)
            if code == 250 and match:
                job_ids.append(int(match.group(1)))
    return job_ids


def wait_for(config: Config, job_ids: list[int], timeout: float) -> bool:
    reader = JournalReader(config.journal_path())
    deadline = time.monotonic() + timeout
    ok = True
    for job_id in job_ids:
        while True:
            job = reader.get(job_id)
            if job is not None and job.state.finished:
                print(render_job(job.to_public(with_secrets=True)))
                ok = ok and job.state.value == "done"
                break
            if time.monotonic() > deadline:
                print(f"job {job_id}: still {job.state.value if job else 'unknown'} "
                      f"after {timeout:.0f} s", file=sys.stderr)
                return False
            time.sleep(0.1)
    return ok


def jupyterhub_env(config: Config, variables: dict[str, Any]) -> Path:
    """JPHUB, the JupyterHub venv, as the old tool read it (an installation variable:
    wod-backend's group_vars/all.yml, or wodmail.yml's `vars`); without one, wodmail's own
    environment (where the `[convert]` extra installs nbconvert)."""
    if "JPHUB" in variables:
        try:
            value = Renderer(variables).value("JPHUB")
        except TemplateError as exc:
            raise ConfigurationError(f"JPHUB: {exc}") from None
        if value:
            return Path(str(value))
    installation = config.wod_installation
    if installation is not None and installation.values.get("JPHUB"):
        return Path(installation.values["JPHUB"])
    return Path(sys.prefix)


def convert(config: Config, fmt: Format, workshop: str, low: int, high: int,
            timeout: float) -> bool:
    """Converts each student's notebooks of `workshop`; False when anything failed."""
    converter = Converter(jupyterhub_env(config, load_base_variables(config)))
    missing = converter.missing(fmt)
    if missing:
        print(f"wodmail-test: {missing}", file=sys.stderr)
        return False
    users = UserDb(config.accounts.root)
    missing = converter.missing_exporter(fmt, users.user(f"student{low}"))
    if missing:
        print(f"wodmail-test: {missing}", file=sys.stderr)
        return False
    ok = True
    for student in range(low, high + 1):
        entry = users.user(f"student{student}")
        folder = config.students_dir / f"student{student}" / workshop
        done = converter.convert(fmt, folder, entry, timeout)
        for name in done.made:
            print(terminal_safe(f"student{student}: {folder / name}"))
        if done.failed or not done.made:
            ok = False
            what = ", ".join(done.failed) or "no notebooks"
            print(terminal_safe(f"wodmail-test: student{student}: {fmt.verb} failed in "
                                f"{folder}: {what}"), file=sys.stderr)
            for line in done.output.splitlines()[-20:]:
                print(terminal_safe(f"  | {line}"), file=sys.stderr)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(quiet_level=logging.WARNING)  # results are printed; logs only warn
    try:
        if args.verb not in (*VERBS, *CONVERSIONS):
            raise UsageError(f"VERB must be one of {', '.join((*VERBS, *CONVERSIONS))}, "
                             f"not {args.verb!r}")
        if args.config is None:
            print(f"wodmail-test: {describe_location()}", file=sys.stderr)
        config = load_config(args.config)
        low, high = parse_range(args.range, config)
        if args.verb in CONVERSIONS:
            if not is_workshop_name(args.workshop):
                raise UsageError(f"not a workshop folder name: {args.workshop!r}")
            return 0 if convert(config, CONVERSIONS[args.verb], args.workshop, low, high,
                                args.timeout) else 1
        mails = plan_mails(args.verb, args.workshop, low, high)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"wodmail-test: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        for line in str(exc).splitlines():
            print(f"wodmail-test: {line}", file=sys.stderr)
        return 1
    except WodmailError as exc:  # PDF, WORD: no such student, not root
        print(f"wodmail-test: {exc}", file=sys.stderr)
        return 1
    try:
        job_ids = send(config, args, mails)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"wodmail-test: cannot send to the daemon: {exc}", file=sys.stderr)
        return 1
    except WodmailError as exc:
        print(f"wodmail-test: {exc}", file=sys.stderr)
        return 1
    if len(job_ids) != len(mails):
        return 1
    if args.wait and not wait_for(config, job_ids, args.timeout):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
