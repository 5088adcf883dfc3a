"""SIPp under load: lean desk phones and a paced carrier, on top of tests/harness/sipp.py.

The harness's processes keep a full SIP message log, which its tests read back.  At a hundred
calls a second that log costs SIPp more CPU than the calls do, CPU the PBX under test would
otherwise get, so these processes keep only SIPp's statistics (``-trace_stat``), its error log,
and one line per successful call written by the caller scenario's ``<log>`` action.  Start,
wait and stop are the harness's (by PID, waiting on process exit, never on a fixed sleep).

Scenarios: ``bench/sipp/caller.xml`` (the carrier), ``bench/sipp/desk_phone.xml`` (answers at
once) and the harness's ``uas_ring.xml`` (rings until the PBX cancels it).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from backline.localpbx.ports import LOOPBACK
from bench.ceiling import cpu_seconds
from tests.harness.sipp import (
    ERRORS,
    SCENARIOS,
    SIPP,
    STATS,
    SippError,
    SippProcess,
    free_media_port,
    free_udp_port,
    parse_stats,
)

BENCH_SCENARIOS = Path(__file__).with_name("sipp")
CALL_LOG = "calls.log"
MESSAGES = "messages.log"

# A call that gets no answer this long after its INVITE (or no 200 to its BYE) is failed by
# SIPp itself; well under the step timeout, so an overloaded PBX shows up as failed calls.
RECV_TIMEOUT_MS = 8000


class LoadSipp(SippProcess):
    """A harness SippProcess without the SIP message log unless ``trace`` is set."""

    def __init__(self, name: str, workdir: Path, scenario_text: str, args: list[str], *,
                 port: int, trace: bool = False) -> None:
        super().__init__(name, workdir, scenario_text, args, port=port)
        self.trace = trace

    def argv(self) -> list[str]:
        w = self.workdir
        trace = ["-trace_msg", "-message_file", str(w / MESSAGES)] if self.trace else []
        return [
            SIPP,
            "-sf", str(self.scenario),
            "-nostdin",
            *trace,
            "-trace_stat", "-stf", str(w / STATS),
            "-trace_err", "-error_file", str(w / ERRORS),
            "-trace_logs", "-log_file", str(w / CALL_LOG),
            *self.args,
        ]  # fmt: skip

    def exited_within(self, timeout: float) -> bool:
        """Whether SIPp exits within TIMEOUT s; it is not reaped (wait() does that)."""
        return self._exited(timeout)

    def stats(self) -> dict[str, str]:
        """The last row of SIPp's statistics (complete once SIPp has exited)."""
        try:
            return parse_stats((self.workdir / STATS).read_text(errors="replace"))
        except FileNotFoundError:
            return {}

    def call_log(self) -> str:
        try:
            return (self.workdir / CALL_LOG).read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _loopback_args(port: int) -> list[str]:
    """As the harness: loopback only, one UDP socket, a control port of our own."""
    return [
        "-i", LOOPBACK,
        "-mi", LOOPBACK,
        "-p", str(port),
        "-mp", str(free_media_port()),
        "-cp", str(free_udp_port()),
        "-t", "u1",
    ]  # fmt: skip


def desk_phone(workdir: Path, name: str, *, answers: bool, lifetime: float,
               trace: bool = False) -> LoadSipp:
    """A started desk phone (UAS, not registered): answers every INVITE, or rings until
    cancelled.  ``lifetime`` is SIPp's own -timeout, so an orphan goes away by itself."""
    port = free_udp_port()
    text = ((BENCH_SCENARIOS / "desk_phone.xml") if answers
            else (SCENARIOS / "uas_ring.xml")).read_text()
    args = [*_loopback_args(port), "-aa", "-timeout", f"{lifetime:g}s"]
    return LoadSipp(name, workdir / f"{name}-{port}", text, args, port=port,
                    trace=trace).start()


_EXTENSION = re.compile(r"[0-9]{1,10}")


def carrier(pbx: tuple[str, int], workdir: Path, number: str, *, from_user: str,
            answerer: str, rate: float, calls: int, max_open: int, trace: bool = False
            ) -> LoadSipp:
    """A started carrier placing CALLS calls to NUMBER at RATE a second; wait() for it.

    At most ``max_open`` calls are open at once: when the PBX answers too slowly SIPp holds
    back new calls, and the achieved rate falls below RATE.  Each call must be answered by
    the desk phone whose user has extension ANSWERER (checked on the answer's
    P-Asserted-Identity) or it fails.  SIPp's own -timeout bounds the whole run.
    """
    if not _EXTENSION.fullmatch(answerer):
        raise ValueError(f"not an extension: {answerer!r}")
    if rate <= 0 or calls <= 0 or max_open <= 0:
        raise ValueError("rate, calls and max_open must be positive")
    port = free_udp_port()
    text = (BENCH_SCENARIOS / "caller.xml").read_text().replace("{{ANSWERER}}", answerer)
    args = [
        *_loopback_args(port),
        "-aa",  # answers Asterisk's connected-line UPDATEs wherever they fall
        "-s", number,
        "-key", "from_user", from_user,
        "-r", f"{rate:g}", "-rp", "1000",
        "-m", str(calls),
        "-l", str(max_open),
        "-recv_timeout", str(RECV_TIMEOUT_MS),
        "-timeout", f"{step_timeout(rate, calls):g}s", "-timeout_error",
        f"{pbx[0]}:{pbx[1]}",
    ]  # fmt: skip
    name = f"carrier-{rate:g}cps"
    return LoadSipp(name, workdir / f"{name}-{port}", text, args, port=port,
                    trace=trace).start()


def step_timeout(rate: float, calls: int) -> float:
    """Long enough for every call to be placed, and the last one to time out, plus slack."""
    return math.ceil(calls / rate + 2 * RECV_TIMEOUT_MS / 1000 + 5)


# ----- results: pure


@dataclass(frozen=True, slots=True)
class CallTimes:
    """One successful call: when its INVITE left and its 200 arrived (wall-clock seconds)."""

    invite: float
    answer: float


_CALL_LINE = re.compile(r"call (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)")


def parse_call_log(text: str) -> list[CallTimes]:
    """The caller scenario's ``call INVITE_S INVITE_US ANSWER_S ANSWER_US`` lines; SIPp's
    other log lines (none expected) are skipped."""
    out = []
    for line in text.splitlines():
        found = _CALL_LINE.search(line)
        if found:
            s0, us0, s1, us1 = (float(g) for g in found.groups())
            out.append(CallTimes(s0 + us0 / 1e6, s1 + us1 / 1e6))
    return out


def rate_of(times: list[float]) -> float:
    """Events per second over the span from the first to the last; 0.0 for fewer than two."""
    if len(times) < 2:
        return 0.0
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else math.inf


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99) by statistics.quantiles' exclusive method; nan if empty."""
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100)[q - 1]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one carrier run did, from SIPp's statistics and its per-call log."""

    returncode: int
    created: int
    successful: int
    failed: int
    retransmissions: int
    offered_cps: float    # INVITEs sent per second, first to last
    answered_cps: float   # answers received per second, first to last
    setup_p50_ms: float   # INVITE to 200
    setup_p99_ms: float
    sipp_cpu: float = 0.0  # CPU seconds of the carrier SIPp over its whole life


def load_result(returncode: int, stats: dict[str, str], call_log: str,
                sipp_cpu: float = 0.0) -> LoadResult:
    def count(column: str) -> int:
        value = stats.get(column, "0").strip()
        return int(value) if value.isdigit() else 0

    calls = parse_call_log(call_log)
    setup = [1000 * (c.answer - c.invite) for c in calls]
    return LoadResult(
        returncode=returncode,
        created=count("TotalCallCreated"),
        successful=count("SuccessfulCall(C)"),
        failed=count("FailedCall(C)"),
        retransmissions=count("Retransmissions(C)"),
        offered_cps=rate_of([c.invite for c in calls]),
        answered_cps=rate_of([c.answer for c in calls]),
        setup_p50_ms=percentile(setup, 50),
        setup_p99_ms=percentile(setup, 99),
        sipp_cpu=sipp_cpu,
    )


def finish(proc: LoadSipp, timeout: float) -> LoadResult:
    """Wait for a carrier to exit by itself (blocking; run it in a thread) and read it,
    with its CPU time: read from /proc once it has exited and before it is reaped, when the
    kernel still shows a zombie's final figures."""
    pid = proc.pid
    exited = pid is not None and proc.exited_within(timeout)
    cpu = cpu_seconds(pid) if exited else 0.0
    try:
        result = proc.wait(0 if exited else 1)
    except SippError:
        return load_result(-1, proc.stats(), proc.call_log(), cpu)
    return load_result(result.returncode, proc.stats(), proc.call_log(), cpu)


__all__ = [
    "CallTimes",
    "LoadResult",
    "LoadSipp",
    "carrier",
    "desk_phone",
    "finish",
    "load_result",
    "parse_call_log",
    "percentile",
    "rate_of",
    "step_timeout",
]
