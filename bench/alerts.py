"""Benchmark backup alerts and their link pages, on this machine, against local peers.

Run: .venv/bin/python -m bench.alerts [--attempts 500] [--seconds 5] [--connections 16]

1. **Attempts to delivered alerts.**  The test practice (tests/harness/alert_site.py: two
   alert emails and one SMS number, a SQLite journal with synchronous=FULL) in an outage;
   ``--attempts`` calls are journaled through ``Controller.record_attempt`` as fast as they
   come, and the clock stops when the local aiosmtpd server has every email.  Two arms:
   - *gathered* (the product's rule): the first attempt is alerted at once, the rest join one
     alert when the 10 s window ends.  The clock is moved past the window by hand, so the
     figure is the machinery (journal, gathering, SMTP), not the window.
   - *one alert per attempt* (gathering off): every attempt its own alert to every address,
     which is what the SMTP path can sustain: emails per second.
2. **Link-page requests per second** under ``wrk`` (Debian's package), on one alert listing a
   call, an SMS and a fax, and on an unknown token (the "expired or not valid" page).  Each
   request looks the link up and writes its audit row (durably) before answering, so the
   journal's commit latency is most of it.  p50/p99 latency as wrk reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.harness

from backline.features.alerts.gather import GatherPolicy
from backline.features.links import tokens as links
from backline.journal import AttemptKind
from tests.harness.alert_site import (
    ALERT_EMAILS,
    FAX_NUMBER,
    PRACTICE_NUMBER,
    AlertSite,
    Site,
)

EMAILS = len(ALERT_EMAILS)


async def attempts_to_alerts(tmp: Path, attempts: int, *, gathered: bool) -> float:
    """Attempts per second, journaled to delivered alerts (printed with the emails/s)."""
    policy = None if gathered else GatherPolicy(first_window=0, max_window=0)
    async with AlertSite(tmp, kind="email", policy=policy) as site:
        await site.engage()
        started = time.perf_counter()
        for i in range(attempts):
            await site.record(AttemptKind.CALL, f"+1720555{i % 10000:04d}", PRACTICE_NUMBER)
        recorded = time.perf_counter() - started
        if gathered:
            await site.notifier.settle()
            site.clock.advance(10)
            site.notifier.wake()
        expected = EMAILS * (2 if gathered else attempts)
        await site.sink.wait_for(expected, within=600)
        elapsed = time.perf_counter() - started
        assert len(site.sink.received) == expected
        name = "gathered (product rule)" if gathered else "one alert per attempt"
        print(f"  {name:26} {attempts} attempts journaled in {recorded:.2f} s "
              f"({attempts / recorded:,.0f}/s); {expected} emails delivered after "
              f"{elapsed:.2f} s: {attempts / elapsed:,.0f} attempts/s, "
              f"{expected / elapsed:,.0f} emails/s")
        return attempts / elapsed


async def link_pages(tmp: Path, seconds: int, connections: int) -> dict[str, tuple[float, float]]:
    """Per page (alert page, unknown link): requests per second and p99 ms under wrk."""
    out = {}
    async with AlertSite(tmp, kind="email") as site:
        link = await one_alert(site, tmp)
        unknown = f"{site.base_url}/a/{links.new_token()}"
        for name, url in (("alert page (3 attempts)", link), ("unknown link (404)", unknown)):
            rate, p50, p99, errors = await wrk(url, seconds, connections)
            out[name] = (rate, p99)
            print(f"  {name:26} {rate:8,.0f} requests/s   p50 {p50:6.2f} ms   "
                  f"p99 {p99:6.2f} ms   ({connections} connections, {seconds} s"
                  f"{', ' + errors if errors else ''})")
        assert site.journal is not None
        audited = sum(1 for e in site.journal.audit_log(1_000_000)
                      if e.action.startswith("link."))
        print(f"  audit rows written: {audited:,}")
    return out


async def one_alert(site: Site, tmp: Path) -> str:
    fax = tmp / "fax.pdf"
    fax.write_bytes(b"%PDF-1.4\n% stand-in\n")
    await site.engage()
    await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)
    await site.record(AttemptKind.SMS, "+17735550188", PRACTICE_NUMBER, text="refill, please")
    await site.record(AttemptKind.FAX, "+18475550123", FAX_NUMBER, file=str(fax))
    await site.notifier.settle()
    site.clock.advance(10)
    site.notifier.wake()
    emails = await site.sink.wait_for(2 * EMAILS)
    found = re.search(r"http://\S+/a/[A-Za-z0-9_-]{43}", emails[-1].raw.decode())
    assert found is not None
    return found.group(0)


_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_ERRORS = re.compile(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)")


async def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float, str]:
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), seconds + 30)
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()}")
    text = out.decode()
    rate = _RATE.search(text)
    assert rate is not None, text
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = {q: float(v) * scale[unit] for q, v, unit in _LATENCY.findall(text)}
    return float(rate.group(1)), latency["50"], latency["99"], "; ".join(_ERRORS.findall(text))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the mode-switch warnings are not the figures
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk (scripts/debian-packages.txt)",
              file=sys.stderr)
        return 2
    print("attempts to delivered alerts (local aiosmtpd, 2 addresses):")
    for gathered in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            await attempts_to_alerts(Path(tmp), args.attempts, gathered=gathered)
    print("link pages under wrk (audit row per request, synchronous=FULL):")
    with tempfile.TemporaryDirectory() as tmp:
        await link_pages(Path(tmp), args.seconds, args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
