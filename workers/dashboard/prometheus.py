"""``/metrics``: the state store's counters in Prometheus' text exposition format, and
gauges of the Redis behind it, read live at each scrape (``workers.doctor.LiveProbe``)."""

from __future__ import annotations

import math

from orchestration.model.names import STEP_BUCKETS, Metric
from workers.doctor import Gauges

_HELP = {
    "baton_workflows_total": ("counter", "Workflows by lifecycle event (started) or end status."),
    "baton_steps_total": ("counter", "Steps committed, by agent, task type and status."),
    "baton_step_duration_seconds": ("histogram", "Time an agent spent on a step, in seconds."),
    "baton_writes_not_replicated_total": (
        "counter",
        "Writes fewer replicas acknowledged than BATON_MIN_REPLICAS asks, by script.",
    ),
    "baton_redis_replicas_online": ("gauge", "Replicas online at the Redis primary."),
    "baton_redis_replica_lag_seconds": (
        "gauge",
        "Seconds since each online replica last acknowledged the primary's stream.",
    ),
    "baton_redis_failovers_total": (
        "counter",
        "Failovers of the Sentinels' service (its config-epoch, bumped by each).",
    ),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _le(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.inf


def render_metrics(counters: dict[str, float], gauges: Gauges | None = None) -> str:
    """The metrics hash in Prometheus' text exposition format (version 0.0.4), then the
    live ``gauges`` of the Redis, if given.

    Each observation is stored in one bucket only (the first whose ``le`` holds it, or
    ``+Inf``: one increment per step instead of one per bucket); Prometheus' cumulative
    buckets and the count are their running sums, made here.
    """
    workflows: dict[str, float] = {}
    steps: dict[tuple[str, str, str], float] = {}
    sums: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[str, float]] = {}
    bounds: set[str] = set()
    not_replicated: dict[str, float] = {}
    for name, value in counters.items():
        kind, *parts = name.split("|")
        if kind == Metric.WORKFLOWS_TOTAL and len(parts) == 1:
            workflows[parts[0]] = value
        elif kind == Metric.STEPS_TOTAL and len(parts) == 3:
            steps[(parts[0], parts[1], parts[2])] = value
        elif kind == Metric.STEP_SECONDS_SUM and len(parts) == 2:
            sums[(parts[0], parts[1])] = value
        elif kind == Metric.STEP_SECONDS_IN and len(parts) == 3:
            buckets.setdefault((parts[0], parts[1]), {})[parts[2]] = value
            bounds.add(parts[2])
        elif kind == Metric.WRITES_NOT_REPLICATED and len(parts) == 1:
            not_replicated[parts[0]] = value
    bounds |= {_num(b) for b in STEP_BUCKETS}
    les = sorted((b for b in bounds if math.isfinite(_le(b))), key=_le)

    out: list[str] = []

    def head(metric: str) -> None:
        kind, text = _HELP[metric]
        out.append(f"# HELP {metric} {text}")
        out.append(f"# TYPE {metric} {kind}")

    head("baton_workflows_total")
    for status in sorted(workflows):
        out.append(f"baton_workflows_total{_labels(status=status)} {_num(workflows[status])}")
    head("baton_steps_total")
    for (agent, task, status), value in sorted(steps.items()):
        labels = _labels(agent=agent, task_type=task, status=status)
        out.append(f"baton_steps_total{labels} {_num(value)}")
    head("baton_step_duration_seconds")
    metric = "baton_step_duration_seconds"
    for agent, task in sorted(set(buckets) | set(sums)):
        got = buckets.get((agent, task), {})
        count = sum(got.values())
        below = 0.0
        for le in les:
            below += got.get(le, 0.0)
            labels = _labels(agent=agent, task_type=task, le=_num(_le(le)))
            out.append(f"{metric}_bucket{labels} {_num(below)}")
        labels = _labels(agent=agent, task_type=task, le="+Inf")
        out.append(f"{metric}_bucket{labels} {_num(count)}")
        labels = _labels(agent=agent, task_type=task)
        out.append(f"{metric}_sum{labels} {_num(sums.get((agent, task), 0.0))}")
        out.append(f"{metric}_count{labels} {_num(count)}")
    head("baton_writes_not_replicated_total")
    for script, value in sorted(not_replicated.items()):
        out.append(f"baton_writes_not_replicated_total{_labels(script=script)} {_num(value)}")
    if gauges is not None:
        head("baton_redis_replicas_online")
        out.append(f"baton_redis_replicas_online {gauges.replicas_online}")
        head("baton_redis_replica_lag_seconds")
        for replica, lag in sorted(gauges.replica_lags.items()):
            out.append(f"baton_redis_replica_lag_seconds{_labels(replica=replica)} {lag}")
        if gauges.failovers is not None:
            head("baton_redis_failovers_total")
            out.append(f"baton_redis_failovers_total {gauges.failovers}")
    return "\n".join(out) + "\n"
