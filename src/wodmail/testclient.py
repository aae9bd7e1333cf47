"""`wodmail-test VERB WORKSHOP [MIN[,MAX]]`: send test orders, like the old wod-test-action.sh.

One mail per student (customer id 0: no participant), except RESET, which sends one mail
for the whole `MIN,MAX` range; PURGE refuses a range. With --wait, waits for each order's
result in the journal and prints it (for a CREATE, the student's new password).
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

from wodmail.cli import render_job
from wodmail.config import Config, describe_location, load_base_variables, load_config
from wodmail.errors import ConfigurationError, WodmailError
from wodmail.journal.store import JournalReader
from wodmail.logs import configure_logging

VERBS = ("CREATE", "CLEANUP", "RESET", "PURGE")
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
exit codes:
  0  every order was accepted (and, with --wait, is done)
  1  an order was refused or failed, the daemon could not be reached, or the config is bad
  2  bad command-line arguments
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wodmail-test", description=__doc__.split("\n")[0], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("verb", type=str.upper, help="CREATE, CLEANUP, RESET or PURGE")
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
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(quiet_level=logging.WARNING)  # results are printed; logs only warn
    try:
        if args.verb not in VERBS:
            raise UsageError(f"VERB must be one of {', '.join(VERBS)}, not {args.verb!r}")
        if args.config is None:
            print(f"wodmail-test: {describe_location()}", file=sys.stderr)
        config = load_config(args.config)
        low, high = parse_range(args.range, config)
        mails = plan_mails(args.verb, args.workshop, low, high)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"wodmail-test: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        for line in str(exc).splitlines():
            print(f"wodmail-test: {line}", file=sys.stderr)
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
