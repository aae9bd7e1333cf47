"""Prometheus metrics (`/metrics` of the status listener), all named `wodmail_*`.

Other modules report events through the few functions below (one call at each layer: the
dispatcher, the steps, the peers' HTTP calls, the intake); what is a state rather than an
event (queues, sessions, the key pool) is read at scrape time from a `LiveSource`.
The registry is this module's own, not prometheus_client's global one: nothing else leaks in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Orders take from a second (CLEANUP) to many minutes (a RESET waiting for `cleaned`).
_ORDER_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
                 float("inf"))
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))

ORDERS = Counter("wodmail_orders", "Orders finished, by verb and outcome (done, failed, "
                 "interrupted by a stop)", ["verb", "outcome"], registry=REGISTRY)
ORDERS_ACCEPTED = Counter("wodmail_orders_accepted", "Orders accepted (250), by verb; "
                          "duplicates are counted apart", ["verb", "duplicate"],
                          registry=REGISTRY)
ORDER_SECONDS = Histogram("wodmail_order_duration_seconds", "Time from start to outcome of "
                          "one run of an order", ["verb", "outcome"], buckets=_ORDER_BUCKETS,
                          registry=REGISTRY)
STEP_SECONDS = Histogram("wodmail_step_duration_seconds", "Duration of the steps of orders "
                         "(retries included), by verb, step and status", ["verb", "step",
                         "status"], buckets=_STEP_BUCKETS, registry=REGISTRY)
PEER_SECONDS = Histogram("wodmail_peer_request_duration_seconds", "Calls to the portal "
                         "(API-DB) and the hub (JupyterHub)", ["peer", "method"],
                         buckets=_CALL_BUCKETS, registry=REGISTRY)
PEER_ERRORS = Counter("wodmail_peer_errors", "Failed calls to the portal and the hub, by kind "
                      "(timeout, connection, http_<status>)", ["peer", "kind"],
                      registry=REGISTRY)
SMTP_SESSIONS = Counter("wodmail_smtp_sessions", "SMTP connections accepted",
                        registry=REGISTRY)
SMTP_REFUSALS = Counter("wodmail_smtp_refusals", "Connections and mails refused, by reason "
                        "(network, user, capacity, peer_capacity, timeout, sender, size, "
                        "order, rate, other)", ["reason"], registry=REGISTRY)
STATUS_REFUSALS = Counter("wodmail_status_refusals", "Status listener connections and "
                          "requests refused, by reason (capacity, timeout, request, host, "
                          "token)", ["reason"], registry=REGISTRY)
APPLIANCE_CONNECTIONS = Counter("wodmail_appliance_connections_opened", "ssh connections "
                                "opened to appliances (kept and reused: few per appliance)",
                                registry=REGISTRY)

_NUMBERS = re.compile(r"\d+")


def order_finished(verb: str | None, outcome: str, started: float) -> None:
    """`started`: `time.monotonic()` when the run began."""
    seconds = time.monotonic() - started
    ORDERS.labels(verb or "?", outcome).inc()
    ORDER_SECONDS.labels(verb or "?", outcome).observe(seconds)


def order_accepted(verb: str, duplicate: bool) -> None:
    ORDERS_ACCEPTED.labels(verb, "yes" if duplicate else "no").inc()


def step_finished(verb: str | None, step: str, status: str, seconds: float) -> None:
    # Step names carry student numbers ("home student3"): one series per kind of step.
    STEP_SECONDS.labels(verb or "?", _NUMBERS.sub("N", step), status).observe(seconds)


@dataclass
class PeerResult:
    ok: bool
    at: float  # time.time()
    detail: str


LAST_PEER_RESULTS: dict[str, PeerResult] = {}


def peer_call(peer: str, method: str, seconds: float, *, status: int | None,
              error: str | None = None) -> None:
    """One HTTP call to a peer: `status` None when no answer came (`error` says why)."""
    PEER_SECONDS.labels(peer, method).observe(seconds)
    kind = None
    if status is None:
        kind = "timeout" if error and "Timeout" in error else "connection"
    elif status >= 400:
        kind = f"http_{status}"
    if kind is not None:
        PEER_ERRORS.labels(peer, kind).inc()
    detail = f"{method} answered {status}" if status is not None else f"{method}: {kind}"
    # A 4xx is the peer answering (e.g. 404 for an unknown record): it is reachable.
    LAST_PEER_RESULTS[peer] = PeerResult(status is not None and status < 500, time.time(), detail)


def appliance_connection_opened() -> None:
    APPLIANCE_CONNECTIONS.inc()


def session_opened() -> None:
    SMTP_SESSIONS.inc()


def refused(reason: str) -> None:
    """A mail refused after its transaction (`reason` as recorded in the journal)."""
    refused_kind(refusal_kind(reason))


def refused_kind(kind: str) -> None:
    SMTP_REFUSALS.labels(kind).inc()


def status_refused(reason: str) -> None:
    """A connection or request the status listener refused (`reason`: see STATUS_REFUSALS)."""
    STATUS_REFUSALS.labels(reason).inc()


def refusal_kind(reason: str) -> str:
    if "allowed_networks" in reason:
        return "network"
    if reason.startswith("sender not allowed"):
        return "sender"
    if "-byte limit" in reason:
        return "size"
    if reason.startswith(("relay", "outbox")):
        return "other"
    return "order"


class LiveSource(Protocol):
    """What the running daemon shows at scrape time."""

    def lanes(self) -> dict[str, tuple[int, int]]:
        """Per lane (`student:N`, `customer:C`): (orders doing work, orders waiting)."""
        ...

    def open_sessions(self) -> int: ...

    def key_pool_size(self) -> int | None: ...


class _LiveCollector(Collector):
    def __init__(self) -> None:
        self.sources: list[LiveSource] = []

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily("wodmail_lane_in_flight", "Orders doing work, per lane",
                                      labels=["lane"])
        queued = GaugeMetricFamily("wodmail_lane_queued", "Orders waiting for their turn or "
                                   "a slot, per lane", labels=["lane"])
        sessions = GaugeMetricFamily("wodmail_smtp_sessions_open", "SMTP sessions being served")
        keys = GaugeMetricFamily("wodmail_key_pool_keys", "SSH key pairs made ahead, ready")
        totals = [0, 0]
        open_sessions = 0
        pool: int | None = None
        for source in self.sources:
            for lane, (running, waiting) in sorted(source.lanes().items()):
                in_flight.add_metric([lane], running)
                queued.add_metric([lane], waiting)
                totals[0] += running
                totals[1] += waiting
            open_sessions += source.open_sessions()
            size = source.key_pool_size()
            if size is not None:
                pool = (pool or 0) + size
        yield in_flight
        yield queued
        yield GaugeMetricFamily("wodmail_orders_in_flight", "Orders doing work", value=totals[0])
        yield GaugeMetricFamily("wodmail_orders_queued", "Orders waiting", value=totals[1])
        sessions.add_metric([], open_sessions)
        yield sessions
        if pool is not None:
            keys.add_metric([], pool)
            yield keys


_LIVE = _LiveCollector()
REGISTRY.register(_LIVE)


def watch(source: LiveSource) -> None:
    """Shows `source` at scrape time (a daemon, from its start to its stop)."""
    _LIVE.sources.append(source)


def unwatch(source: LiveSource) -> None:
    if source in _LIVE.sources:
        _LIVE.sources.remove(source)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
