"""Prometheus metrics for one controller, in a registry of their own.

Each :class:`Metrics` owns a ``CollectorRegistry`` instead of using prometheus_client's global
one: two controllers (or two tests) in one process would otherwise fight over the same names
and raise ``Duplicated timeseries``.

Label values come from closed sets wherever the value could come from outside: kind, mode,
outcome and via are enums, so a forged caller ID or a typo can never mint a new time series.
``script`` and ``pbx`` are names the controller itself chose (AGI script names, PBX nodes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backline.core.outage import Mode, Via
from backline.core.records import AttemptKind, Outcome
from backline.features.status.page import backlog_by_kind

log = logging.getLogger("backline.status")

CONTENT_TYPE = CONTENT_TYPE_LATEST

# An AGI decision is a dictionary look-up and a journal read: well under 5 ms when healthy.
# The default buckets (5 ms to 10 s) would put every healthy call in the first bucket.
AGI_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05)

BACKLOG_NAME = "backline_delivery_backlog"
ROUND_PARTS = ("journal", "pbx", "other")
SIP_AUTH_OUTCOMES = ("failure", "banned", "ban_failed")  # what a failed mode round failed on


class Metrics:
    """The controller's counters and gauges; ``render()`` is what ``/metrics`` serves.

    ``backlog``, when given, is called at every scrape (from a worker thread: the server
    renders off the event loop, so it may read the journal) and returns the number of held
    attempts not yet delivered, per kind.  Computing it at scrape time means the gauge can
    never go stale between the controller's updates.
    """

    def __init__(self, backlog: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._attempts = Counter(
            "backline_attempts", "Inbound attempts (call, SMS, fax) by mode and outcome.",
            ["kind", "mode", "outcome"], registry=self.registry)
        self._mode_changes = Counter(
            "backline_mode_changes", "Switches between normal and outage mode.",
            ["mode", "via"], registry=self.registry)
        self._engaged = Gauge(
            "backline_outage_engaged", "1 while backup (outage) mode is engaged, else 0.",
            registry=self.registry)
        self._agi = Histogram(
            "backline_agi_decision_seconds", "Time to answer one FastAGI request.",
            ["script"], buckets=AGI_BUCKETS, registry=self.registry)
        self._link = Gauge(
            "backline_pbx_link_up", "1 while the control link to the PBX is up, else 0.",
            ["pbx"], registry=self.registry)
        self._failed_rounds = Counter(
            "backline_mode_rounds_failed", "Rounds of the once-a-second mode agreement that "
            "failed (and were tried again), by the part that failed.", ["part"],
            registry=self.registry)
        for part in ROUND_PARTS:
            self._failed_rounds.labels(part)
        self._sip_auth = Counter(
            "backline_sip_auth", "Failed SIP authentications Asterisk reported (failure), "
            "sources banned in the firewall (banned) and bans nft refused (ban_failed).",
            ["outcome"], registry=self.registry)
        for sip_outcome in SIP_AUTH_OUTCOMES:
            self._sip_auth.labels(sip_outcome)
        self._unsealed = Counter(
            "backline_desk_calls_unencrypted_refused", "Desk-phone calls refused under "
            "encryption: required for want of TLS or SRTP (emergency calls are never "
            "refused).", registry=self.registry)
        self._srtp_refusals = Counter(
            "backline_desk_phone_srtp_refusals", "Encrypted (SRTP) calls a desk phone "
            "refused when rung under encryption: required: it did not ring.",
            registry=self.registry)
        self._refusing = Gauge(
            "backline_desk_phones_refusing_encryption", "Desk phones whose last encrypted "
            "ring was refused (listed on the status page).", registry=self.registry)
        # Start every closed-set series at zero, so rate() and increase() see the first event
        # instead of a series that appears out of nowhere with its first increment.
        # Each series' child is kept: labels() checked and looked it up again on every
        # call's path (bench/outage_cpu.py).
        self._attempt_series = {
            (kind, mode, outcome): self._attempts.labels(kind.value, mode.value, outcome.value)
            for kind in AttemptKind for mode in Mode for outcome in Outcome}
        self._agi_series: dict[str, Histogram] = {}
        for mode in Mode:
            for via in Via:
                self._mode_changes.labels(mode.value, via.value)
        if backlog is not None:
            self.registry.register(_BacklogCollector(backlog))

    def attempt(self, kind: AttemptKind, mode: Mode, outcome: Outcome) -> None:
        self._attempt_series[kind, mode, outcome].inc()

    def mode_changed(self, mode: Mode, via: Via) -> None:
        self._mode_changes.labels(mode.value, via.value).inc()

    def set_engaged(self, engaged: bool) -> None:
        self._engaged.set(1 if engaged else 0)

    def agi_latency(self, script: str, seconds: float) -> None:
        series = self._agi_series.get(script)
        if series is None:
            series = self._agi_series[script] = self._agi.labels(script)
        series.observe(seconds)

    def link(self, pbx: str, up: bool) -> None:
        self._link.labels(pbx).set(1 if up else 0)

    def sip_auth(self, outcome: str) -> None:
        """One of :data:`SIP_AUTH_OUTCOMES` (backline.features.bans)."""
        self._sip_auth.labels(outcome).inc()

    def unsealed_refused(self) -> None:
        self._unsealed.inc()

    def srtp_refused(self) -> None:
        self._srtp_refusals.inc()

    def refusing_encryption(self, count: Callable[[], int]) -> None:
        """The gauge reads ``count()`` at every scrape."""
        self._refusing.set_function(count)

    def mode_round_failed(self, part: str) -> None:
        self._failed_rounds.labels(part if part in ROUND_PARTS else "other").inc()

    def listeners(self, counts: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        """``backline_public_connections{listener}`` and ``..._refused_total{listener}``,
        read at scrape time from ``counts()``: (listener, open now, refused so far)."""
        self.registry.register(_ListenerCollector(counts))

    def journal_disk(self, free: Callable[[], int | None], floor: int) -> None:
        """``backline_journal_free_bytes`` (read at scrape time from ``free()``; absent when
        the journal is not on this machine) and ``backline_journal_free_floor_bytes``, below
        which the email intake turns mail away: alert well before the one reaches the other."""
        self.registry.register(_DiskCollector(free, floor))

    def render(self) -> bytes:
        """Every metric in Prometheus text format (serve with ``CONTENT_TYPE``).

        Calls the backlog callable, so it may block: call it from a worker thread.
        """
        return generate_latest(self.registry)


class _BacklogCollector(Collector):
    """``backline_delivery_backlog{kind}``, read from the controller at scrape time."""

    def __init__(self, backlog: Callable[[], Mapping[str, int]]) -> None:
        self._backlog = backlog

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering never calls the backlog (and never touches the journal).
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        try:
            rows = backlog_by_kind(self._backlog())
        except Exception:
            # One failing source must not fail the whole scrape: the link and mode gauges
            # matter most exactly when the journal is in trouble.  The series goes absent,
            # which absent() alerts catch.
            log.exception("cannot compute the delivery backlog for /metrics")
            return [family]
        for kind, held in rows.items():
            family.add_metric([kind], held)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            BACKLOG_NAME, "Attempts held in an outage and not yet delivered to the inbox.",
            labels=["kind"])


class _ListenerCollector(Collector):
    """Connections to the listeners other machines reach: open now, and refused (at a cap,
    or because the descriptors kept for the PBX would have been touched)."""

    def __init__(self, counts: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        held, refused = self._families()
        for name, open_now, refusals in self._counts():
            held.add_metric([name], open_now)
            refused.add_metric([name], refusals)
        return [held, refused]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (GaugeMetricFamily("backline_public_connections",
                                  "Connections open now on a listener other machines reach.",
                                  labels=["listener"]),
                CounterMetricFamily("backline_public_connections_refused",
                                    "Connections refused at once: the listener at its cap, or "
                                    "the descriptors kept for the PBX would have been used.",
                                    labels=["listener"]))


class _DiskCollector(Collector):
    """The journal's free space and the intake's floor (backline.features.journal_disk)."""

    def __init__(self, free: Callable[[], int | None], floor: int) -> None:
        self._free = free
        self._floor = floor

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        free, floor = self._families()
        now = self._free()
        if now is not None:
            free.add_metric([], now)
        floor.add_metric([], self._floor)
        return [free, floor]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("backline_journal_free_bytes",
                                  "Free bytes on the journal's filesystem (SQLite only)."),
                GaugeMetricFamily("backline_journal_free_floor_bytes",
                                  "Below this much free space the email intake turns mail "
                                  "away (452) so that calls and SMS still journal."))
