"""Prometheus metrics, read from the state the ladder already keeps — no second bookkeeping.

- Gauges and the restart counter are read from the live supervisors' `snapshot()` at scrape time, by a custom
  collector (`LiveCollector`), so a scrape always shows what the ladder holds now.
- `clawmedic_incidents_total` and `clawmedic_remedies_total` are counted in the incident store at scrape time
  (a read-only connection per scrape: grouped counts, a few milliseconds even with years of incidents).
- The two histograms are fed as things happen: probe durations through `Prober.observe`, time to recover from
  the `incident_closed` event and the incident's own record (`Incident.time_to_recover_s`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from clawmedic import defaults
from clawmedic.config import LoadedConfig, ProbeConfig
from clawmedic.ladder.states import State
from clawmedic.probes import ProbeResult
from clawmedic.store.incidents import IncidentStore

log = logging.getLogger("clawmedic.web")

Snapshots = Callable[[], Mapping[str, Mapping[str, Any]]]  # target name → `TargetSupervisor.snapshot()`

_CLOSED_BY_OUTCOME = (
    "SELECT target, status, COUNT(*) FROM incidents WHERE closed_at IS NOT NULL GROUP BY target, status"
)
_REMEDIES = (
    "SELECT i.target, json_extract(e.detail, '$.remedy'), json_extract(e.detail, '$.status'), COUNT(*)"
    " FROM incident_events e JOIN incidents i ON i.id = e.incident_id WHERE e.kind = 'remedy' GROUP BY 1, 2, 3"
)


def version() -> str:
    try:
        return metadata.version("clawmedic")
    except metadata.PackageNotFoundError:
        return "unknown"


class LiveCollector(Collector):
    """What the supervisors and the incident store hold, turned into metric families at each scrape."""

    def __init__(self, snapshots: Snapshots, incidents_db: Path) -> None:
        self._snapshots = snapshots
        self._db = incidents_db
        self._version = version()

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to collect at registration: the supervisors may not exist yet

    def collect(self) -> Iterable[Metric]:
        snaps = self._snapshots()
        up = GaugeMetricFamily(
            "clawmedic_target_up", "1 when the target answers its liveness probe, else 0.", labels=["target"]
        )
        state = GaugeMetricFamily(
            "clawmedic_target_state",
            "1 for the ladder state the target is in, 0 for the others.",
            labels=["target", "state"],
        )
        restarts = CounterMetricFamily(
            "clawmedic_restarts", "Restarts of the target since the daemon started.", labels=["target"]
        )
        open_ = GaugeMetricFamily(
            "clawmedic_incidents_open", "Incidents of the target that are open now.", labels=["target"]
        )
        for name, s in snaps.items():
            up.add_metric([name], 1.0 if s.get("live") else 0.0)
            for st in State:
                state.add_metric([name, st.value], 1.0 if s.get("state") == st.value else 0.0)
            restarts.add_metric([name], float(s.get("restarts") or 0))
            open_.add_metric([name], float(sum(1 for k in ("incident", "latent_incident") if s.get(k) is not None)))
        yield from (up, state, restarts, open_)
        yield from self._from_store()
        yield InfoMetricFamily(
            "clawmedic_build", "The clawmedic version serving these metrics.", value={"version": self._version}
        )

    def _from_store(self) -> Iterable[Metric]:
        closed = CounterMetricFamily(
            "clawmedic_incidents", "Closed incidents, by how they ended.", labels=["target", "outcome"]
        )
        remedies = CounterMetricFamily(
            "clawmedic_remedies", "Remedies run by the doctor, by outcome.", labels=["target", "remedy", "status"]
        )
        try:
            # Read-only, a connection per scrape: never a writer, and a store moved aside is simply read anew.
            with contextlib.closing(sqlite3.connect(f"file:{self._db}?mode=ro", uri=True, timeout=1)) as db:
                for target, outcome, n in db.execute(_CLOSED_BY_OUTCOME):
                    closed.add_metric([str(target), str(outcome)], float(n))
                for target, remedy, status, n in db.execute(_REMEDIES):
                    remedies.add_metric([str(target), str(remedy or "unknown"), str(status or "unknown")], float(n))
        except sqlite3.Error as e:
            log.debug("metrics: the incident store cannot be read now: %s", e)  # no store yet: no counts yet
        return (closed, remedies)


class Metrics:
    """The daemon's registry: the live collector, the two histograms fed by events, and the process's own CPU and
    memory (`process_*`, prometheus-client's standard collector)."""

    def __init__(self, loaded: LoadedConfig, snapshots: Snapshots, incidents_db: Path) -> None:
        # No `_created` series: the text format Prometheus scrapes does not use them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.registry.register(LiveCollector(snapshots, incidents_db))
        ProcessCollector(registry=self.registry)
        self.time_to_recover = Histogram(
            "clawmedic_time_to_recover_seconds",
            "From the first failure to live again, per incident that recovered.",
            ["target"],
            buckets=defaults.TTR_BUCKETS_S,
            registry=self.registry,
        )
        self.probe_duration = Histogram(
            "clawmedic_probe_duration_seconds",
            "How long each HTTP probe took (liveness or readiness), failures included.",
            ["target", "probe"],
            buckets=defaults.PROBE_BUCKETS_S,
            registry=self.registry,
        )
        # Which target and probe a probe config belongs to: the supervisors probe with these very objects.
        self._probes: dict[int, tuple[str, str]] = {}
        for name, t in loaded.targets.items():
            for kind in ("liveness", "readiness"):
                cfg = getattr(t, kind, None)
                if cfg is not None:
                    self._probes[id(cfg)] = (name, kind)
        self.incidents: IncidentStore | None = None  # set when the daemon runs

    def on_probe(self, cfg: ProbeConfig, result: ProbeResult, seconds: float) -> None:
        if (where := self._probes.get(id(cfg))) is not None:
            self.probe_duration.labels(*where).observe(seconds)

    def on_event(self, event: Mapping[str, Any]) -> None:
        if event.get("kind") != "incident_closed" or event.get("outcome") != "recovered" or self.incidents is None:
            return
        incident_id, target = event.get("incident"), event.get("target")
        if not isinstance(incident_id, int) or not isinstance(target, str):
            return
        inc = self.incidents.get(incident_id)
        if inc is not None and (ttr := inc.time_to_recover_s) is not None:
            self.time_to_recover.labels(target).observe(max(ttr, 0.0))
