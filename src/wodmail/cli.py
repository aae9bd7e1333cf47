"""wodmail: the Workshops-on-Demand backend's order daemon and its admin commands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wodmail.config import Config, describe_location, load_config
from wodmail.errors import ConfigurationError, WodmailError
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import (
    RAW_KEPT_BYTES,
    JournalAdmin,
    JournalReader,
    daemon_holds,
    daemon_pid,
)
from wodmail.logs import configure_logging
from wodmail.safefiles import UnsafeFile

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_JOB_FAILED, EXIT_JOB_UNFINISHED = 3, 4
EXIT_BROKEN_PIPE, EXIT_INTERRUPTED = 141, 130

EXIT_CODES = """\
exit codes:
  0    success (show: the order is done)
  1    an error: bad or unreadable config, no journal, no such job, an admin command
       refused, check-config found a failure, render found a problem
  2    bad command-line arguments
  3    show: the order failed, was refused or was cancelled
  4    show: the order is still queued or running
  130  interrupted (Ctrl-C)
  141  the output pipe closed early (e.g. `wodmail jobs --json | head`)
"""


def _common(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--config and -v, accepted before or after the command (`wodmail -v jobs -c F`)."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config", "-c", type=Path, default=default, metavar="FILE",
        help="YAML config file (default: $WODMAIL_CONFIG, else /etc/wodmail/wodmail.yml when it "
        "exists, else the embedded defaults; without --config the command says which it used)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                        help="debug logs on stderr (secrets stay masked)")


def _job_state(text: str) -> JobState:
    """A --state value; `refused` is the README's word for the `rejected` state."""
    word = text.strip().lower()
    try:
        return JobState("rejected" if word == "refused" else word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a state: {', '.join(s.value for s in JobState)} or refused"
        ) from None


def _command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text,
                                                          description=help_text)
    _common(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wodmail", description=__doc__, epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _command(commands, "serve", "run the daemon in the foreground (SIGTERM/SIGINT stop it)")

    jobs = _command(commands, "jobs", "list orders, newest first")
    jobs.add_argument("--json", action="store_true",
                      help="a JSON array (passwords masked) instead of a table")
    jobs.add_argument("--state", action="append", type=_job_state, metavar="STATE",
                      help="only orders in this state (repeat for several): "
                      f"{', '.join(s.value for s in JobState)} (`refused` = `rejected`)")
    jobs.add_argument("--student", type=int, metavar="N",
                      help="only orders touching student N (ranges included)")
    jobs.add_argument("--workshop", metavar="W", help="only orders for workshop W")
    jobs.add_argument("--verb", type=str.upper, choices=["CREATE", "CLEANUP", "RESET", "PURGE"],
                      help="only orders with this verb")
    jobs.add_argument("--limit", type=int, default=None, metavar="N",
                      help="at most N orders")

    show = _command(commands, "show",
                    "one order with its steps, attempts and result (exit code: its state)")
    show.add_argument("job", type=int, help="the job id (see `wodmail jobs`)")
    show.add_argument("--json", action="store_true",
                      help="the order as JSON, the password included")
    show.add_argument("--raw", action="store_true", help="also print the mail as received")

    relay = _command(commands, "relay", "list relayed mail (the outbox), newest first")
    relay.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    relay.add_argument("--state", action="append", choices=["queued", "sent", "failed"],
                       help="only mail in this state (repeat for several)")
    relay.add_argument("--limit", type=int, default=None, metavar="N", help="at most N mails")

    check = _command(commands, "check-config",
                     "check the config and the world it points at; print each effective value"
                     " and its origin")
    check.add_argument("--json", action="store_true",
                       help="the settings as JSON, with an `origins` mapping")

    render = _command(commands, "render",
                      "render a workshop as student N would get it (touches nothing)")
    render.add_argument("workshop", help="WKSHP-x or CHLG-x")
    render.add_argument("--student", "-s", type=int, required=True, metavar="N",
                        help="the student id to render for")
    render.add_argument("--out", "-o", type=Path, default=None, metavar="DIR",
                        help="write the files a CREATE would put in HOME/WS into this folder")
    render.add_argument("--password", default=None,
                        help="PASSSTU for ldap/varpass workshops (default: a placeholder)")

    retry = _command(commands, "retry",
                     "run a failed (or cancelled) order again, as a new attempt of the same job")
    retry.add_argument("job", type=int, help="the job id (see `wodmail jobs`)")

    cancel = _command(commands, "cancel", "cancel an accepted order that has not started")
    cancel.add_argument("job", type=int, help="the job id (see `wodmail jobs`)")

    prune = _command(commands, "prune",
                     "delete finished orders and refusals older than DAYS from the journal")
    prune.add_argument("--older-than", type=_days, required=True, metavar="DAYS",
                       help="finished (done, failed, cancelled, refused) more than DAYS ago")
    prune.add_argument("--yes", "-y", action="store_true",
                       help="no question for --older-than 0 (every finished order): for scripts")

    appliance = _command(commands, "appliance", "appliance host keys wodmail pinned")
    actions = appliance.add_subparsers(dest="action", required=True, metavar="ACTION")
    forget = actions.add_parser(
        "forget", help="forget the pinned host key of an appliance (after a reinstall): the "
        "next connection pins the key it offers then")
    _common(forget)
    forget.add_argument("address", help="the appliance's address, as in IP-<WS>")
    reload = _command(commands, "reload",
                      "make the running daemon read its config again (SIGHUP), and with --wait "
                      "wait until it has applied it")
    reload.add_argument("--wait", action="store_true",
                        help="wait (reading /healthz) until the reload is applied; exit 1 if "
                        "the daemon refused the config or the timeout passed")
    reload.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                        help="seconds --wait waits (default 30)")

    demo = _command(commands, "demo",
                    "run CREATE and CLEANUP against a sandboxed backend and show everything")
    demo.add_argument("--keep", action="store_true", help="keep the sandbox folder")
    return parser


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"days must be 0 or more, got {text}")
    return days


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"seconds must be more than 0, got {text}")
    return seconds


def _admin(config: Config) -> JournalAdmin:
    try:
        return JournalAdmin(config.journal_path())
    except FileNotFoundError:
        raise WodmailError(
            f"no journal at {config.journal_path()} (has `wodmail serve` run with this config?)"
        ) from None


def _reader(config: Config) -> JournalReader:
    try:
        return JournalReader(config.journal_path())
    except FileNotFoundError:
        raise WodmailError(
            f"no journal at {config.journal_path()} (has `wodmail serve` run with this config?)"
        ) from None


def _cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from wodmail.lifecycle.backend import Backend
    from wodmail.lifecycle.verbs import LifecycleRunner
    from wodmail.service import serve_forever

    asyncio.run(serve_forever(config, LifecycleRunner(Backend.from_config(config))))
    return 0


def _running_daemon(config: Config) -> bool:
    return daemon_holds(config.journal_path())


def _as_seen(job: Job, daemon: bool) -> Job:
    """A job as an admin should see it: `running` only while a daemon runs it."""
    if job.state is JobState.RUNNING and not daemon:
        return job.model_copy(update={"state": JobState.INTERRUPTED})
    return job


def _stored_states(states: list[JobState] | None, daemon: bool) -> list[JobState] | None:
    """The journal's states to ask for, for --state filters as the admin sees them."""
    if not states:
        return None
    stored = {s for s in states if s not in (JobState.RUNNING, JobState.INTERRUPTED)}
    if (JobState.RUNNING in states and daemon) or (JobState.INTERRUPTED in states and not daemon):
        stored.add(JobState.RUNNING)
    return sorted(stored) or []


def _cmd_jobs(config: Config, args: argparse.Namespace) -> int:
    daemon = _running_daemon(config)
    states = _stored_states(args.state, daemon)
    if states == []:
        jobs: list[Job] = []
    else:
        jobs = _jobs(config, args, states)
    jobs = [_as_seen(job, daemon) for job in jobs]
    if args.json:
        json.dump([job.to_public() for job in jobs], sys.stdout, indent=2)
        print()
        return 0
    print(f"{'ID':>6}  {'STATE':<11} {'VERB':<8} {'STUDENT':<9} {'CUST':>6}  "
          f"{'WORKSHOP':<22} {'RECEIVED':<29} REASON")
    for job in jobs:
        public = job.to_public()
        student = "?" if job.student is None else _student_text(job)
        print(
            f"{job.id:>6}  {job.state.value:<11} {_cell(job.verb or '-'):<8} {student:<9} "
            f"{_text(job.customer):>6}  {_cell(job.workshop or '-'):<22} "
            f"{public['received_at']:<29} {_cell(' '.join((job.reason or '').split()))}"
        )
    return 0


def _jobs(config: Config, args: argparse.Namespace, states: list[JobState] | None) -> list[Job]:
    return _reader(config).list_jobs(
        states=states,
        student=args.student,
        workshop=args.workshop,
        verb=args.verb,
        limit=args.limit,
    )


# Control characters (C0 but tab and line feed, DEL, C1) and format characters (bidi
# overrides, zero-width ...) from a mail would act on the terminal or hide text there.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def terminal_safe(text: str) -> str:
    """`text` with every character that would act on a terminal shown escaped (`\\x1b`)."""
    return _UNSAFE.sub(lambda match: ascii(match.group())[1:-1], text)


def _cell(text: str) -> str:
    """One table cell: terminal-safe, and on one line (tabs and line feeds escaped too)."""
    return terminal_safe(text).replace("\t", "\\t").replace("\n", "\\n")


def _student_text(job: Job) -> str:
    if job.student_max is not None:
        return f"{job.student},{job.student_max}"
    return str(job.student)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _cmd_show(config: Config, args: argparse.Namespace) -> int:
    reader = _reader(config)
    job = reader.get(args.job)
    if job is None:
        raise WodmailError(f"no job {args.job} in {config.journal_path()}")
    job = _as_seen(job, _running_daemon(config))
    public = job.to_public(with_secrets=True)
    if args.raw:
        stored = reader.stored_mail(job.id)
        public["raw"] = stored.data.decode("utf-8", "replace") if stored else ""
        public["raw_omitted"] = stored.omitted if stored else 0
    if args.json:
        json.dump(public, sys.stdout, indent=2)
        print()
    else:
        print(render_job(public))
    return show_exit_code(job.state)


def show_exit_code(state: JobState) -> int:
    """`wodmail show`'s exit code: done 0, failed/refused/cancelled 3, not finished 4."""
    if state is JobState.DONE:
        return EXIT_OK
    return EXIT_JOB_FAILED if state.finished else EXIT_JOB_UNFINISHED


def render_job(public: dict[str, Any]) -> str:
    """The human-readable form of one job (`wodmail show`)."""
    lines = [f"job {public['id']}: {public['state']}"]
    for key in ("verb", "student", "customer", "workshop", "email", "reason", "received_at",
                "started_at", "finished_at", "attempts", "duplicates", "peer", "envelope_from",
                "sender", "subject", "message_id"):
        if public.get(key) not in (None, "", 0) or key in ("student", "customer"):
            value = _text(public.get(key))
            if key == "attempts" and public.get("retries"):
                value += f" ({public['retries']} step retries)"
            lines.append(f"  {key + ':':<14} {value}")
    lines.extend(_current_lines(public.get("current_step")))
    result = public.get("result") or {}
    for key, value in result.items():
        if key in ("steps", "verb", "hooks"):
            continue
        if key == "password":
            lines.append(f"  {'password:':<14} {_password_text(public, str(value))}")
            continue
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        lines.append(f"  {key + ':':<14} {shown}")
    lines.extend(_step_line(step) for step in result.get("steps", []))
    lines.extend(_hook_lines(result.get("hooks") or []))
    lines.extend(_attempt_lines(public.get("attempt_log") or []))
    if public.get("raw"):
        lines.append(_raw_heading(public.get("raw_omitted") or 0))
        lines.extend(f"    | {line}" for line in public["raw"].splitlines())
    return terminal_safe("\n".join(lines))


def _raw_heading(omitted: int) -> str:
    if not omitted:
        return "  raw mail:"
    return (f"  raw mail (its first {RAW_KEPT_BYTES} bytes: the {omitted} bytes after them"
            " were received but not kept):")


def _hook_lines(hooks: list[dict[str, Any]]) -> list[str]:
    """Each hook that ran, who it ran as, and its output, line by line."""
    lines = ["  hooks:"] if hooks else []
    for hook in hooks:
        if hook.get("skipped"):
            lines.append(f"    - {hook.get('name')}: {hook['skipped']}")
            continue
        user = f" as {hook['user']}" if hook.get("user") else ""
        status = "ok" if hook.get("ok") else "failed"
        timing = f" {hook['ms']} ms" if "ms" in hook else ""
        lines.append(f"    - {hook.get('name')}{user}: {status}{timing}")
        lines.extend(f"      | {line}" for line in str(hook.get("output") or "").splitlines())
    return lines


def _password_text(public: dict[str, Any], password: str) -> str:
    """What the text form says about the order's password: shown only when it is the one a
    participant was (or will be) given, never for one that was not applied."""
    steps = (public.get("result") or {}).get("steps", [])
    applied = any(
        step.get("status") == "ok" and (step.get("name", "").startswith("set-password")
                                        or "password" in step.get("name", "").split(" ")[-1])
        for step in steps
    )
    if public.get("verb") != "CREATE":
        if applied:
            return ("changed to a new random one to lock the participant out "
                    "(not shown; `--json` has it)")
        return "not changed (the order stopped before the password step)"
    if public.get("state") == "done":
        return password
    if applied:
        return f"{password} (applied before the order stopped)"
    return "none applied (the order stopped before the password was set)"


def _current_lines(current: dict[str, Any] | None) -> list[str]:
    if not current:
        return []
    line = (f"  {'now:':<14} attempt {current['attempt']}, step {current['name']!r} "
            f"since {current['started_at']}, try {current['try']}")
    if current.get("last_error"):
        line += f" (last error: {current['last_error']})"
    return [line]


def _step_line(step: dict[str, Any]) -> str:
    status = step.get("status", "?")
    if status in ("skipped", "resumed"):  # resumed: done by an earlier run, not repeated
        return f"    - {step.get('name')}: {status} ({step.get('why') or 'no reason recorded'})"
    if status == "running":
        return f"    - {step.get('name')}: running"
    tries = f" after {step['attempts']} tries" if step.get("attempts", 1) > 1 else ""
    detail = f"  {step['error']}" if step.get("error") else ""
    return f"    - {step.get('name')}: {status} {step.get('ms', '?')} ms{tries}{detail}"


def _attempt_lines(log: list[dict[str, Any]]) -> list[str]:
    if len(log) < 2 and not any(entry.get("outcome") == "interrupted" for entry in log):
        return []  # one plain attempt: the fields above say it all
    lines = ["  attempt log:"]
    for entry in log:
        outcome = entry.get("outcome") or ("running" if entry.get("started_at") else "queued")
        when = entry.get("finished_at") or entry.get("started_at") or entry.get("requested_at")
        reason = f": {entry['reason']}" if entry.get("reason") else ""
        retries = f", {entry['retries']} step retries" if entry.get("retries") else ""
        lines.append(f"    {entry.get('attempt')}. ({entry.get('trigger')}) {outcome} "
                     f"{when}{retries}{reason}")
    return lines


def _cmd_relay(config: Config, args: argparse.Namespace) -> int:
    from wodmail.relay.outbox import list_outbox

    mails = list_outbox(config.outbox_path(), states=args.state, limit=args.limit)
    if args.json:
        json.dump(mails, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'ID':>6}  {'STATE':<7} {'TRIES':>5}  {'RECEIVED':<25} {'TO':<30} {'SUBJECT':<30} "
          "LAST ERROR")
    for mail in mails:
        # Subjects and recipients come from whoever sent the mail, errors from the
        # smarthost: each cell escaped before it is cut to width.
        to = _cell(", ".join(mail["recipients"]) or "-")
        print(
            f"{mail['id']:>6}  {_cell(mail['state']):<7} {mail['attempts']:>5}  "
            f"{_cell(mail['received_at'])[:25]:<25} {to[:30]:<30} "
            f"{_cell(mail['subject'] or '-')[:30]:<30} {_cell(mail['last_error'] or '')}"
        )
    return 0


def _cmd_check_config(config: Config, args: argparse.Namespace) -> int:
    from wodmail.config import provenance
    from wodmail.configcheck import describe, run_checks

    settings, origins = describe(config), provenance(config)
    checks = run_checks(config)
    if args.json:
        json.dump({**settings, "origins": origins,
                   "checks": [dataclasses.asdict(check) for check in checks]},
                  sys.stdout, indent=2)
        print()
    else:
        width = max(len(key) for key in origins)
        for key, origin in origins.items():
            print(f"{key:<{width}}  {json.dumps(_dotted(settings, key))}  ({origin})")
        print()
        for check in checks:
            print(check.line())
    failures = sum(check.status == "FAIL" for check in checks)
    warnings = sum(check.status == "warn" for check in checks)
    print(f"check-config: {len(checks)} checks, {failures} failed, {warnings} warnings",
          file=sys.stderr)
    return EXIT_ERROR if failures else EXIT_OK


def _print_refused_file(exc: UnsafeFile, as_json: bool) -> None:
    """A config that cannot load because root would not trust a file of the installation
    (wod.sh, wod-private.sh): check-config's one failed check."""
    from wodmail.configcheck import Check

    check = Check("FAIL", "installation", str(exc))
    if as_json:
        json.dump({"checks": [dataclasses.asdict(check)]}, sys.stdout, indent=2)
        print()
    else:
        print(check.line())


def _dotted(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _cmd_retry(config: Config, args: argparse.Namespace) -> int:
    job = _admin(config).retry(args.job)
    print(f"job {job.id} queued again as attempt {len(job.attempt_log)}; a running daemon "
          f"starts it within {config.dispatch.queue_poll_seconds:g} s (`wodmail show {job.id}`)")
    return 0


def _cmd_cancel(config: Config, args: argparse.Namespace) -> int:
    job = _admin(config).cancel(args.job)
    print(f"job {job.id} cancelled: it will not run")
    return 0


def _cmd_prune(config: Config, args: argparse.Namespace) -> int:
    admin = _admin(config)
    planned = admin.prunable(args.older_than * 86400)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(planned.items()))
    print(f"{sum(planned.values())} orders finished more than {args.older_than:g} days ago "
          f"will be deleted{f' ({counts})' if counts else ''}", flush=True)
    if args.older_than == 0 and not args.yes and not _confirmed("Delete every finished order?"):
        raise WodmailError("nothing deleted: `prune --older-than 0` deletes every finished "
                           "order; confirm on a terminal or add --yes")
    pruned = admin.prune(args.older_than * 86400, config.max_refusals_per_peer)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(pruned.by_state.items()))
    print(f"{sum(pruned.by_state.values())} orders finished more than {args.older_than:g} days "
          f"ago deleted{f' ({counts})' if counts else ''}; {pruned.over_peer_cap} refusals over "
          f"the {config.max_refusals_per_peer} kept per client deleted")
    if config.outbox_path().exists():
        from wodmail.relay.outbox import prune_outbox

        relayed = prune_outbox(config.outbox_path(), time.time() - args.older_than * 86400)
        print(f"{relayed} relayed mails finished more than {args.older_than:g} days ago deleted")
    return 0


def _confirmed(question: str) -> bool:
    """A yes from the admin at a terminal; False without one (cron, pipes)."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _cmd_render(config: Config, args: argparse.Namespace) -> int:
    from wodmail.lifecycle.preview import render_workshop

    preview = render_workshop(config, args.workshop, args.student, args.out, args.password)
    for warning in preview.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for issue, hook in preview.at_create:
        print(f"{issue.file}: {issue.variable} is set at CREATE by {hook}")
    for issue in preview.issues:
        print(f"{issue.file}: {issue.problem}", file=sys.stderr)
    if preview.issues:
        print(f"{len(preview.issues)} problem(s); nothing written", file=sys.stderr)
        return 1
    if args.out is None:
        print(f"{args.workshop} renders cleanly for student {args.student}")
    else:
        print(f"{preview.written} files written to {args.out}")
    return 0


def _cmd_appliance(config: Config, args: argparse.Namespace) -> int:
    from wodmail.appliances.hostkeys import HostKeys

    hostkeys = HostKeys(config.state_dir, config.appliances.known_hosts)
    removed = hostkeys.forget(args.address, config.appliances.port)
    if not removed:
        print(f"no host key pinned for {args.address} in {hostkeys.pins}")
        return EXIT_OK
    print(f"the host key of {args.address} is forgotten ({removed} line(s) removed from "
          f"{hostkeys.pins}); the next connection pins the key the appliance offers then")
    return EXIT_OK


REFUSED_RELOAD_LOG = ("journalctl -u wodmail -o cat | jq -r "
                      "'select(.event | startswith(\"configuration not reloaded\")) | .reason'")


def _cmd_reload(config: Config, args: argparse.Namespace) -> int:
    from wodmail.status.probe import HealthProbe

    pid = daemon_pid(config.journal_path())
    if pid is None:
        raise WodmailError(f"no running wodmail holds the journal {config.journal_path()}: "
                           "nothing to reload")
    probe = HealthProbe.from_settings(config.status, timeout=args.timeout) if args.wait else None
    try:
        before = probe.config_state() if probe else None
    except WodmailError as exc:
        raise WodmailError(f"{exc}; no SIGHUP sent") from None
    os.kill(pid, signal.SIGHUP)
    if probe is None or before is None:
        print(f"SIGHUP sent to wodmail (pid {pid}); `wodmail reload --wait` waits until the "
              "config is applied")
        return EXIT_OK
    after = probe.wait_past(before, args.timeout)
    if after is None:
        raise WodmailError(f"SIGHUP sent to wodmail (pid {pid}), but no reload finished within "
                           f"{args.timeout:g} s (/healthz still says generation "
                           f"{before.generation}, {before.reloads} reloads)")
    if after.last_reload != "applied":
        raise WodmailError(f"wodmail (pid {pid}) refused the configuration; the running one "
                           f"stays (generation {after.generation}). Its reason is in its log: "
                           f"{REFUSED_RELOAD_LOG}")
    print(f"configuration reloaded: generation {after.generation} (was {before.generation})")
    return EXIT_OK


def _cmd_demo(config: Config, args: argparse.Namespace) -> int:
    from wodmail.dev.demo import run_demo

    return run_demo(keep=args.keep, config=config if args.config else None)


# Without -v: the daemon and the demo log their events; check-config's report says all it
# found (a log line before it would only repeat it); other commands log warnings only.
QUIET_LEVELS = {"serve": logging.INFO, "demo": logging.INFO, "check-config": logging.CRITICAL}

COMMANDS = {
    "serve": _cmd_serve,
    "render": _cmd_render,
    "demo": _cmd_demo,
    "jobs": _cmd_jobs,
    "show": _cmd_show,
    "check-config": _cmd_check_config,
    "retry": _cmd_retry,
    "cancel": _cmd_cancel,
    "prune": _cmd_prune,
    "relay": _cmd_relay,
    "appliance": _cmd_appliance,
    "reload": _cmd_reload,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, quiet_level=QUIET_LEVELS.get(args.command, logging.WARNING))
    # The demo runs on its own sandbox: only an explicit --config (or $WODMAIL_CONFIG) joins it.
    discover = args.command != "demo"
    try:
        if args.config is None and args.command not in ("serve", "demo"):
            print(f"wodmail: {describe_location(discover=discover)}", file=sys.stderr)
        config = load_config(args.config, discover=discover)
        return COMMANDS[args.command](config, args)
    except ConfigurationError as exc:
        if args.command == "check-config" and isinstance(exc, UnsafeFile):
            _print_refused_file(exc, args.json)
        for line in str(exc).splitlines():  # one line per problem, each naming file and key
            print(f"wodmail: {line}", file=sys.stderr)
        if args.command == "reload":
            print("wodmail: no SIGHUP sent: the daemon would refuse this config too and keep "
                  "its running one", file=sys.stderr)
        return EXIT_ERROR
    except WodmailError as exc:
        print(f"wodmail: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, like any filter would.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        print(f"wodmail: unexpected {type(exc).__name__}: {detail} (run with -v for details)",
              file=sys.stderr)
        return EXIT_ERROR


def _silence_stdout() -> None:
    """Points stdout at /dev/null so that flushing it at exit raises no second BrokenPipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
