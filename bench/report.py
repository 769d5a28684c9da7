"""Turn the raw results into docs/benchmarks.md and docs/benchmarks.png.

Every figure is the median over repeats with the min-max range; every ratio is computed
per repeat (Baton / Celery from the same repeat) and then summarised the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import maps, waits
from bench.sides import GROUP_SECONDS

Getter = Callable[[dict[str, Any]], float]
KB, MB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Summary:
    median: float
    lo: float
    hi: float

    def fmt(self, digits: int = 1, unit: str = "") -> str:
        def f(x: float) -> str:
            return f"{x:,.{digits}f}"

        if self.median != self.median:  # NaN: a ratio against zero or a negative figure
            return "–"

        if len({round(self.lo, digits), round(self.hi, digits)}) == 1:
            return f"{f(self.median)}{unit}"
        return f"{f(self.median)}{unit} ({f(self.lo)}–{f(self.hi)})"


def summarise(values: list[float]) -> Summary:
    return Summary(statistics.median(values), min(values), max(values))


def human_size(n: int) -> str:
    if n >= MB:
        return f"{n // MB} MB"
    if n >= KB:
        return f"{n // KB} KB"
    return f"{n} B"


@dataclass
class Row:
    """One comparison: both sides' figure and the per-repeat ratio against a target."""

    label: str
    baton: Summary
    celery: Summary
    ratio: Summary
    target: str = ""
    met: bool | None = None
    digits: int = 1
    unit: str = ""

    def cells(self) -> list[str]:
        met = "" if self.met is None else ("yes" if self.met else "**no**")
        return [
            self.label,
            self.baton.fmt(self.digits, self.unit),
            self.celery.fmt(self.digits, self.unit),
            self.ratio.fmt(2, "×"),
            self.target or "–",
            met or "–",
        ]


def _ratio(x: float, y: float) -> float:
    return x / y if y > 0 and x >= 0 else float("nan")


def at(*path: str) -> Getter:
    """The getter of the figure at ``path`` in one repeat's results."""

    def get(r: dict[str, Any]) -> float:
        value: Any = r
        for key in path:
            value = value[key]
        return float(value)

    return get


def compare(
    results: dict[str, list[dict[str, Any]]],
    label: str,
    get: Getter,
    *,
    target: tuple[str, float] | None = None,
    digits: int = 1,
    unit: str = "",
    diff: bool = False,
) -> Row:
    """A row from per-repeat results; ``diff`` compares Baton - Celery instead of a ratio."""
    b = [get(x) for x in results["baton"]]
    c = [get(x) for x in results["celery"]]
    rel = [(x - y) if diff else _ratio(x, y) for x, y in zip(b, c, strict=True)]
    row = Row(label, summarise(b), summarise(c), summarise(rel), digits=digits, unit=unit)
    if diff:
        row.ratio = summarise([_ratio(x, y) for x, y in zip(b, c, strict=True)])
    if target:
        op, bound = target
        value = statistics.median(rel)
        row.target = f"{'+' if diff else ''}{op} {bound:g}{'' if diff else '×'}"
        row.met = value <= bound if op == "≤" else value >= bound
    return row


def compared(rows: list[Row], width: int = 6) -> str:
    """A table of compared figures: the first ``width`` columns of ``HEAD`` and of each row."""
    return table(HEAD[:width], [r.cells()[:width] for r in rows])


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


HEAD = ["", "Baton", "Celery", "ratio (B/C)", "target", "met?"]


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Step latency and message size by shared-data size; fan-out wall time by size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"baton": "tab:blue", "celery": "tab:orange"}
    sizes = sorted(int(s) for s in results["baton"][0]["handoff"])
    fans = sorted(int(s) for s in results["baton"][0]["fanout"])
    for side in ("baton", "celery"):
        runs = results[side]
        lat = [summarise([r["handoff"][str(s)]["step_ms"] for r in runs]) for s in sizes]
        msg = [
            summarise([r["handoff"][str(s)]["max_message_bytes"] / KB for r in runs]) for s in sizes
        ]
        fan = [summarise([r["fanout"][str(n)] for r in runs]) for n in fans]
        for ax, xs, ys in ((axes[0], sizes, lat), (axes[1], sizes, msg), (axes[2], fans, fan)):
            med = [y.median for y in ys]
            err = [[y.median - y.lo for y in ys], [y.hi - y.median for y in ys]]
            ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=side, color=colors[side])
    titles = (
        ("Step latency vs shared data", "shared data (bytes)", "ms per step"),
        ("Largest task message vs shared data", "shared data (bytes)", "KB"),
        ("Fan-out wall time", "group / chord members", "seconds"),
    )
    for ax, (title, xl, yl) in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _headline(res: dict[str, list[dict[str, Any]]], sz: dict[str, Any]) -> list[Row]:
    big = str(max(n for n, _ in sz["fanout"]))
    return [
        compare(
            res,
            "Sequential 5 steps, median latency (ms)",
            lambda r: r["sequential"]["median_ms"],
            target=("≤", 1.25),
        ),
        compare(
            res,
            f"Payload {human_size(sz['payload_size'])} × 5 steps, median (ms)",
            lambda r: r["payload"]["median_ms"],
            target=("≤", 0.7),
        ),
        compare(
            res,
            f"Fan-out {big} members, wall time (s)",
            lambda r: r["fanout"][big],
            target=("≤", 1.0),
            digits=2,
        ),
        compare(
            res,
            f"Throughput, {sz['throughput']} × 5 steps (completions/s)",
            lambda r: r["throughput"]["per_s"],
            target=("≥", 0.8),
        ),
        compare(
            res,
            "Redis round trips per step (extra = Baton − Celery)",
            lambda r: r["cost"]["round_trips"],
            target=("≤", 3),
            diff=True,
        ),
    ]


def lost_runs(
    res: dict[str, list[dict[str, Any]]],
    memory: dict[str, list[dict[str, Any]]],
    bound: float | None = None,
    more: list[dict[str, Any]] | tuple[()] = (),
) -> str:
    """The runs whose results never came within the bench's bound (a chain that never
    finishes): counted per side and scenario, left out of the figures above. ``bound``:
    a run's (a fan-out's: ``GROUP_SECONDS``); ``more``: sections 8, 10 and 11's lost runs,
    a record each (``bench.sides.counted``: side, scenario, ``bound_s``)."""
    counts: dict[tuple[str, str, float | None], int] = {}
    for side, runs in [*res.items(), *memory.items()]:
        for r in runs:
            found = r.get("lost", {})
            for name, n in found.items() if isinstance(found, dict) else [("memory", found)]:
                if n:
                    key = (side, name, GROUP_SECONDS if name == "fanout" else bound)
                    counts[key] = counts.get(key, 0) + n
    for rec in more:
        key = (rec["side"], rec["scenario"], rec["bound_s"])
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        within = (
            f" in time: within {bound:g} s a run, {GROUP_SECONDS:g} s a fan-out or one of"
            " section 8's groups and chords, section 10's `timeout` a map or chord"
            if bound
            else ""
        )
        return f"\n## Lost runs\n\nNone: every run's results came{within}.\n"
    rows = [
        [side, name, str(n), "–" if waited is None else f"{waited:g}"]
        for (side, name, waited), n in sorted(counts.items(), key=lambda kv: kv[0][:2])
    ]
    return (
        "\n## Lost runs\n\nRuns whose results did not come within the time each was waited"
        " for (a chain that never finishes, a group, chord or map that never completes),"
        " counted and left out of the figures; the bench went on without them.\n\n"
        + table(["side", "scenario", "lost", "waited for (s)"], rows)
        + "\n"
    )


def more_lost(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The lost runs of sections 8, 10 and 11 (``bench.sides.counted``'s records)."""
    found = [*data.get("io", {}).get("lost", []), *data.get("map_limits", {}).get("lost", [])]
    for run in data.get("maps", []):
        found += run.get("lost", [])
    return found


def markdown(data: dict[str, Any]) -> str:
    res: dict[str, list[dict[str, Any]]] = data["results"]
    sz, m = data["sizes"], data["machine"]
    n_rep = len(res["baton"])
    rows = _headline(res, sz)
    out: list[str] = []
    add = out.append
    add("# Benchmarks: Baton vs bare Celery\n")
    add(
        "Written by `python -m bench` from a real run"
        f" ({data['elapsed_s'] / 60:.1f} min, {data['finished']}). Both sides run the same"
        " no-op work on the same private `redis-server`, with worker processes started with"
        " identical Celery settings (`orchestration.flow.broker.celery_config`: JSON,"
        " `task_acks_late`, `worker_prefetch_multiplier=1`, task events), prefork,"
        " concurrency 2; the sides run one after the other, never at the same time,"
        " alternating which goes first; Redis is flushed between them. Section 8 (agents"
        " that call an outside API: async agents on the asyncio pool, rate limits, streamed"
        " output) has pools and sizes of its own,"
        " described there; so have sections 9 to 11.\n"
    )
    add(
        f"Each figure is the median over {n_rep} repeat(s), with min–max in parentheses;"
        " each ratio is Baton ÷ Celery within the same repeat, summarised the same way."
        " Lower is better except throughput.\n"
    )
    add(
        "**Caveat:** this is a shared 2-core machine; other processes (e.g. the project's"
        " own test suite) may have run during the benchmark; the load averages under"
        " *Machine* say how busy it was, and wide min–max ranges are the sign of it.\n"
    )
    add("## Headline: targets\n")
    extra = rows[-1]
    add(compared(rows[:-1]))
    add("")
    add(
        table(
            ["", "Baton", "Celery", "extra (B−C)", "target", "met?"],
            [
                [
                    extra.label,
                    extra.baton.fmt(1),
                    extra.celery.fmt(1),
                    summarise(
                        [
                            b["cost"]["round_trips"] - c["cost"]["round_trips"]
                            for b, c in zip(res["baton"], res["celery"], strict=True)
                        ]
                    ).fmt(1),
                    "≤ +3",
                    "yes" if extra.met else "**no**",
                ]
            ],
        )
    )
    if data.get("io"):
        add("")
        add(io_targets(data["io"]))
    if data.get("waits"):
        add("")
        add(waits_targets(data["waits"]))
    if data.get("maps"):
        add("")
        add(maps_targets(data["maps"]))
    add(lost_runs(res, data.get("memory", {}), data.get("run_seconds"), more_lost(data)))
    add(HOW_BATON_GETS_THERE)
    add("\n## Machine\n")
    add(table(["", ""], [[k, str(v)] for k, v in m.items()]))
    add("\n## How to run\n")
    add(
        "```bash\n.venv/bin/python -m bench            # the full run (about 20 min on 2 cores);"
        " rewrites docs/benchmarks.{md,png}\n.venv/bin/python -m bench --quick"
        " --out /tmp/b  # tiny sizes, a minute or two; used by tests/test_bench_smoke.py\n"
        ".venv/bin/python -m bench --only io --out /tmp/b  # section 8's scenarios only:"
        " /tmp/b/benchmarks-io.md\n"
        ".venv/bin/python -m bench --only waits --out /tmp/b  # section 9's:"
        " /tmp/b/benchmarks-waits.md\n"
        ".venv/bin/python -m bench --only maps --out /tmp/b  # section 10's:"
        " /tmp/b/benchmarks-maps.md\n"
        ".venv/bin/python -m bench --only map_limits --out /tmp/b  # section 11's:"
        " /tmp/b/benchmarks-map_limits.md\n"
        ".venv/bin/python -m bench --only failover --soak 40 --out /tmp/b  # section 12's,"
        " with the full soak (30 kills, 10 freezes): /tmp/b/benchmarks-failover.md\n```\n"
    )
    add(
        "It starts its own `redis-server` (`orchestration.client.embedded.RedisServer`, on a"
        " free port, AOF on as Baton ships it), then per side: Baton workers via"
        " `orchestration.client.embedded.LocalWorkers`"
        " (`python -m workers.cli worker --agents bench`,"
        " agent `bench` from `bench/agents.py`, loaded with `BATON_AGENT_MODULES=bench.agents`)"
        " or `celery -A bench.bare worker -Q agent.bare -c 2 -P prefork` (tasks in"
        " `bench/bare.py`). Readiness is a Celery ping.\n"
    )
    add("## How each side is timed\n")
    add(
        "- **Baton**: from `run_workflow()` (validation, create, start, first publish) to"
        " `wait()` returning the final `WorkflowContext`.\n"
        "- **Celery**: from `apply_async()` of the canvas to the final task's result: the"
        " client subscribes to that task's result channel (`celery-task-meta-<id>`, where the"
        " Redis backend publishes it), GETs it once in case it is already there, else blocks"
        " on the subscription -- what Baton's `wait()` does with its status channel."
        " `AsyncResult.get()` by default follows parents (a GET of each parent's state on"
        " every wake-up); `get(follow_parents=False)` would be equivalent to what is done"
        " here. The client app's automatic subscription to every sent task's result, never"
        " read here, is off (which spares Celery a SUBSCRIBE per run).\n"
        "- Bare workers get Baton's worker logging setup (`workers.logs`) too, so both"
        " sides format their log lines the same way.\n"
        "- Chains pass each task's return value to the next (`.s()`), the idiomatic way to"
        " hand state on in Celery; chord members are immutable (`.si()`); the chord callback"
        " counts the members' results.\n"
    )

    add("## 1. Sequential latency (5 steps, one at a time)\n")
    add(f"{sz['seq_runs']} runs per repeat after one warm-up run.\n")
    add(
        compared(
            [
                compare(
                    res,
                    "median (ms)",
                    lambda r: r["sequential"]["median_ms"],
                    target=("≤", 1.25),
                ),
                compare(res, "p95 (ms)", lambda r: r["sequential"]["p95_ms"]),
            ]
        )
    )

    add("\n## 2. Fan-out: parallel group vs chord\n")
    add("Wall time from submit to the aggregate (Baton) / chord callback result (Celery).\n")
    fan_rows = []
    for n, runs in sz["fanout"]:
        tgt = ("≤", 1.0) if n == max(x for x, _ in sz["fanout"]) else None
        fan_rows.append(
            compare(
                res,
                f"{n} members (s; {runs} run(s) per repeat)",
                at("fanout", str(n)),
                target=tgt,
                digits=3,
            )
        )
    add(compared(fan_rows))
    if all(r.get("fanout_cpu") for side in res.values() for r in side):
        big = max(x for x, _ in sz["fanout"])
        add(
            f"\nCPU per member in one more {big}-member run (ms; from `/proc` and Redis'"
            " `INFO cpu`): the worker's consumer process receives each message, sends its"
            " three task events and acks it, on either side, and is the bottleneck.\n"
        )
        labels = {
            "worker_parent": "worker consumer (parent) process",
            "pool_children": "pool children (the tasks)",
            "redis": "redis-server",
            "client": "client (submitting, waiting)",
        }
        cpu_rows = [
            compare(res, label, at("fanout_cpu", k), digits=3) for k, label in labels.items()
        ]
        add(compared(cpu_rows, 4))

    add("\n## 2b. Payload: 5 steps handing on state\n")
    add(
        f"Each step reads the previous step's output and writes {human_size(sz['payload_size'])}"
        " (Baton: `shared_data` in Redis, messages carry references; Celery: the return value,"
        " stored in the result backend and sent as the next message's argument)."
        f" {sz['payload_runs']} runs per repeat.\n"
    )
    add(
        compared(
            [
                compare(res, "median (ms)", lambda r: r["payload"]["median_ms"], target=("≤", 0.7)),
                compare(res, "p95 (ms)", lambda r: r["payload"]["p95_ms"]),
            ]
        )
    )

    add("\n## 3. Throughput\n")
    add(f"{sz['throughput']} five-step workflows / chains submitted at once, then waited for.\n")
    add(
        compared(
            [
                compare(
                    res,
                    "completions / s",
                    lambda r: r["throughput"]["per_s"],
                    target=("≥", 0.8),
                ),
                compare(res, "submit time (s)", lambda r: r["throughput"]["submit_s"], digits=2),
                compare(res, "wall time (s)", lambda r: r["throughput"]["wall_s"], digits=2),
            ]
        )
    )

    add("\n## 4. Cost per step\n")
    add(
        f"{sz['cost_runs']} sequential 5-step runs; deltas of `INFO stats` and"
        " `INFO commandstats`, divided by the number of steps, with the workers' idle"
        " traffic (BRPOP timeouts, heartbeats, measured over an idle window just before)"
        " subtracted pro rata. *Round trips* are `total_reads_processed` (one read event per"
        " request or pipeline); *commands* count every command, including those a Lua"
        " script runs (`EVALSHA` is one round trip but several commands). Message bytes are"
        " the serialized task message (JSON body + headers) from `after_task_publish`, in"
        " every process.\n"
    )
    add(
        compared(
            [
                compare(res, "round trips / step", lambda r: r["cost"]["round_trips"]),
                compare(res, "commands / step", lambda r: r["cost"]["commands"]),
                compare(
                    res,
                    "task messages / step",
                    lambda r: r["cost"]["messages_per_step"],
                    digits=2,
                ),
                compare(
                    res,
                    "bytes / message (median)",
                    lambda r: r["cost"]["bytes_per_message"],
                    digits=0,
                ),
                compare(
                    res,
                    "bytes into Redis / step",
                    lambda r: r["cost"]["net_in_bytes"],
                    digits=0,
                ),
                compare(
                    res,
                    "bytes out of Redis / step",
                    lambda r: r["cost"]["net_out_bytes"],
                    digits=0,
                ),
            ],
            4,
        )
    )

    def calls(side: str, c: str) -> float:
        return float(statistics.median(r["cost"]["per_command"].get(c, 0) for r in res[side]))

    cmds = sorted(
        {c for side in res.values() for r in side for c in r["cost"]["per_command"]},
        key=lambda c: -calls("baton", c),
    )
    add("\nPer command (calls per step, median over repeats):\n")
    add(
        table(
            ["command", "Baton", "Celery"],
            [[f"`{c}`", f"{calls('baton', c):.2f}", f"{calls('celery', c):.2f}"] for c in cmds],
        )
    )

    add("\n## 5. Handoff scaling\n")
    add(
        "Step 1 writes S bytes of state; steps 2–5 follow it (Baton: no-op steps, which still"
        " load the workflow's shared data; Celery: tasks that return the previous result, so"
        " the state rides in every message and result). Step latency = (last step done −"
        " first step done) / 4, from the workers' own timestamps. Message bytes = the"
        " largest task message of the run.\n"
    )
    hrows = []
    for size, _ in sz["handoff"]:
        s = str(size)
        hrows.append(compare(res, f"{human_size(size)}: ms / step", at("handoff", s, "step_ms")))
        hrows.append(
            compare(
                res,
                f"{human_size(size)}: largest message (bytes)",
                at("handoff", s, "max_message_bytes"),
                digits=0,
            )
        )
    add(compared(hrows, 4))
    add("\n![latency and message bytes by shared-data size; fan-out wall time](benchmarks.png)\n")

    mem = data["memory"]
    add("## 6. Redis memory\n")
    add(
        f"{sz['memory_runs']} finished five-step runs in a session whose workers have"
        f" `BATON_RETENTION_SECONDS={mem['baton'][0]['retention_s']}` and the same"
        " `BATON_RESULT_EXPIRES` (Celery's result keys, both sides); `used_memory` delta per"
        " run right after they finish, and again once the retention has expired.\n"
    )
    add(
        compared(
            [
                compare(mem, "bytes / finished run", lambda r: r["bytes_per_workflow"], digits=0),
                compare(mem, "keys / finished run", lambda r: r["keys_per_workflow"], digits=1),
                compare(
                    mem,
                    "bytes / run after expiry",
                    lambda r: r["after_expiry_bytes_per_workflow"],
                    digits=0,
                ),
            ],
            4,
        )
    )

    add("\n## 7. Client wait\n")
    add(
        "From the last step's commit (Baton: `finished_at` in the state; Celery: the final"
        " result's `date_done`) to the client's wait returning, over the sequential runs.\n"
    )
    add(
        compared(
            [
                compare(res, "median (ms)", lambda r: r["sequential"]["client_wait_ms"], digits=2),
                compare(res, "p95 (ms)", lambda r: r["sequential"]["client_wait_p95_ms"], digits=2),
            ],
            4,
        )
    )
    if data.get("io"):
        add("")
        add(io_section(data["io"]).rstrip("\n"))
    if data.get("waits"):
        add("")
        add(waits.section(data["waits"]).rstrip("\n"))
    if data.get("maps"):
        add("")
        add(maps.section(data["maps"]).rstrip("\n"))
    if data.get("map_limits"):
        add("")
        add(map_limits_section(data["map_limits"]).rstrip("\n"))
    add("")
    add(profile_section(data["profile"], data.get("notes", "")))
    return "\n".join(out) + "\n"


# --- Section 8: agents that call the outside world (bench/io.py) -----------------------

IO_TARGETS = {
    "ratio": 0.3,  # Baton asyncio wall / Celery threads wall
    "wall_s": 2.5,  # Baton's wall time for 1,000 calls of 1 s
    "rss_mb": 400.0,  # Baton worker's peak RSS
    "per_second": 21,  # the most the API accepted in any 1 s under a 20/s limit
    "off_ideal": 0.10,  # the limited run's wall time against n / 20 s
    "stream_ms": 5.0,  # median emit -> read latency
}


def _io_vals(runs: list[dict[str, Any] | None], key: str, scale: float = 1.0) -> list[float]:
    """A figure over repeats, those whose group or chord was lost (``None``) left out."""
    return [float(r[key]) * scale for r in runs if r is not None]


def _per_repeat(
    a: list[dict[str, Any] | None], b: list[dict[str, Any] | None], key: str
) -> list[float]:
    """``a``'s figure ÷ ``b``'s within each repeat that both have."""
    return [_ratio(float(x[key]), float(y[key])) for x, y in zip(a, b, strict=True) if x and y]


def _median(values: list[float]) -> float:
    """The median; NaN (no target met) when every repeat was lost."""
    return statistics.median(values) if values else math.nan


def _worst(runs: list[dict[str, Any] | None], key: str) -> float:
    """The largest figure over repeats; NaN (no bound met) if a repeat was lost."""
    values = _io_vals(runs, key)
    return max(values) if values and len(values) == len(runs) else math.nan


def _fmt(values: list[float], digits: int = 1, unit: str = "") -> str:
    return summarise(values).fmt(digits, unit) if values else "–"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def io_targets(io: dict[str, Any]) -> str:
    """The I/O scenarios against their targets: times on the median over repeats, bounds
    (peak memory, the API's busiest second, its refusals) on every repeat (the worst)."""
    t, sz = IO_TARGETS, io["sizes"]
    conc, lim, stream = io["concurrency"], io["limit"], io["stream"]
    b_wall, c_wall = _io_vals(conc["baton"], "wall_s"), _io_vals(conc["threads"], "wall_s")
    ratio = _per_repeat(conc["baton"], conc["threads"], "wall_s")
    rss = _io_vals(conc["baton"], "rss_peak_mb")
    b_sec, c_sec = (
        _io_vals(lim["baton"], "max_sent_per_second"),
        _io_vals(lim["celery"], "max_sent_per_second"),
    )
    b_429, c_429 = _io_vals(lim["baton"], "rejected_429"), _io_vals(lim["celery"], "rejected_429")
    b_off, c_off = (
        _io_vals(lim["baton"], "off_ideal", 100),
        _io_vals(lim["celery"], "off_ideal", 100),
    )
    b_ms, c_ms = _io_vals(stream["baton"], "median_ms"), _io_vals(stream["celery"], "median_ms")
    calls = f"{sz['calls']:,} calls of {sz['delay']:g} s"
    rate = f"{sz['limit_calls']} calls at 20/s on {sz['limit_workers']} processes"
    rows = [
        [
            f"I/O-bound, {calls}: wall time (s), Baton asyncio ÷ Celery threads",
            _fmt(b_wall, 2),
            _fmt(c_wall, 2),
            _fmt(ratio, 2, "×"),
            f"≤ {t['ratio']:g}×",
            _met(_median(ratio) <= t["ratio"]),
        ],
        [
            f"I/O-bound, {calls}: Baton wall time (s)",
            _fmt(b_wall, 2),
            "–",
            "–",
            f"≤ {t['wall_s']:g} s",
            _met(_median(b_wall) <= t["wall_s"]),
        ],
        [
            f"I/O-bound, {calls}: Baton worker peak RSS (MB)",
            _fmt(rss, 0),
            "–",
            "–",
            f"≤ {t['rss_mb']:g} MB, every repeat",
            _met(_worst(conc["baton"], "rss_peak_mb") <= t["rss_mb"]),
        ],
        [
            f"Limit, {rate}: most requests the API received in any 1 s",
            _fmt(b_sec, 0),
            _fmt(c_sec, 0),
            "–",
            f"≤ {t['per_second']:g}, every repeat",
            _met(_worst(lim["baton"], "max_sent_per_second") <= t["per_second"]),
        ],
        [
            f"Limit, {rate}: the API's 429 refusals",
            _fmt(b_429, 0),
            _fmt(c_429, 0),
            "–",
            "0, every repeat",
            _met(_worst(lim["baton"], "rejected_429") == 0),
        ],
        [
            f"Limit, {rate}: wall time vs the ideal {sz['limit_calls'] / 20:g} s (%)",
            _fmt(b_off, 1, "%"),
            _fmt(c_off, 1, "%"),
            "–",
            f"within ±{t['off_ideal']:.0%}",
            _met(abs(_median(b_off)) <= t["off_ideal"] * 100),
        ],
        [
            f"Stream, {sz['emits']} emits: median emit → read latency (ms)",
            _fmt(b_ms, 2),
            _fmt(c_ms, 2),
            _fmt(_per_repeat(stream["baton"], stream["celery"], "median_ms"), 2, "×"),
            f"≤ {t['stream_ms']:g} ms",
            _met(_median(b_ms) <= t["stream_ms"]),
        ],
    ]
    return (
        "Agents that call the outside world (section 8; Celery: threads pool, its own"
        f" `rate_limit`, `update_state` polled every {sz['poll_ms']:g} ms). Times are judged"
        " on the median over repeats; bounds marked *every repeat* on the worst one:\n\n"
        + table(HEAD, rows)
    )


def io_section(io: dict[str, Any]) -> str:
    sz, conc, lim, stream = io["sizes"], io["concurrency"], io["limit"], io["stream"]
    n_rep, n_lim = len(conc["baton"]), len(lim["baton"])
    out = ["## 8. Agents that call the outside world: I/O, limits, streaming\n"]
    add = out.append
    add(
        "`bench/io.py`. The outside world is `workers/llm_loopback.py`, the OpenAI-compatible"
        " chat API on loopback, in a process of its own (tornado, one event loop; started by"
        " the harness in `tests/llm_server.py`): it answers"
        " after a fixed delay, refuses (429) beyond a quota per API key in any sliding"
        " second, and counts what it saw. Baton's agent is `bench_io` (`bench/agents.py`:"
        " `async def` tasks on one `aiohttp.ClientSession` per event loop, reused, as"
        " `agents/llm.py` does: about 0.6 ms of CPU per call at 1,000 in flight, where"
        " httpx spends 2.5 ms and more); bare Celery's tasks are plain functions on"
        " `urllib`"
        " (`bench/bare.py`). Each side's workers are started for the scenario, one session"
        " at a time, alternating which goes first; Redis is flushed between sessions."
        f" Medians over {n_rep} repeat(s) ({n_lim} for the limit), min–max in parentheses.\n"
    )
    add("### 8a. I/O-bound concurrency\n")
    add(
        f"{sz['calls']:,} calls, each awaiting a {sz['delay']:g} s answer, as one parallel"
        " group of that many members with its aggregate (Baton: one workflow) or one chord"
        " with its callback (Celery), submitted at once and timed to the aggregate /"
        f" callback. Baton: ONE worker process, `--pool asyncio --concurrency"
        f" {sz['aio_concurrency']}`. Celery: ONE worker, `--pool threads --concurrency"
        f" {sz['threads']}`; and, for the record, the prefork pool with {sz['prefork']}"
        f" processes on {sz['prefork_calls']} calls only (it runs {sz['prefork']} at a"
        " time). *No engine*: the same calls with the same client code from one"
        " `asyncio.gather` in the benchmark's own process -- what the client and the server"
        " cost without any queue. Each timed run follows a warm-up of"
        f" {sz['warmup']} calls. Peak RSS is the worker process's `VmHWM` (the asyncio and"
        " threads pools run everything in that one process); CPU is user + system time"
        " from `/proc` over the timed run (a prefork worker's children included). The"
        " machine has 2 cores for the worker, the API server, Redis and the client.\n"
    )
    cols = ["baton", "threads", "prefork", "floor"]
    head = [
        "",
        f"Baton: asyncio, 1 process × {sz['aio_concurrency']}",
        f"Celery: threads, 1 process × {sz['threads']}",
        f"Celery: prefork × {sz['prefork']}",
        "no engine (same client)",
    ]

    def row(label: str, key: str, digits: int, skip: tuple[str, ...] = ()) -> list[str]:
        vals = ["–" if c in skip else _fmt(_io_vals(conc[c], key), digits) for c in cols]
        return [label, *vals]

    rows = [
        row("calls", "calls", 0),
        row("wall time (s)", "wall_s", 2),
        row("calls / s", "per_s", 1),
        row("the API's most requests in flight at once", "max_in_flight", 0),
        row("worker peak RSS (MB)", "rss_peak_mb", 0, ("prefork", "floor")),
        row("CPU of the worker process(es) in the run (s; no engine: this process)", "cpu_s", 2),
        row("CPU of the API server in the run (s)", "api_cpu_s", 2),
    ]
    ratio = _per_repeat(conc["baton"], conc["threads"], "wall_s")
    rows.append(["wall time ÷ Celery threads'", _fmt(ratio, 2, "×"), "1×", "–", "–"])
    add(table(head, rows))
    add("\n### 8b. A global rate limit\n")
    add(
        f"{sz['limit_calls']} calls in one group / chord against an API whose quota is 20"
        f" requests per second per key (answering after {sz['limit_delay']:g} s), under a"
        f" limit of 20/s, on {sz['limit_workers']} worker processes. Baton:"
        ' `rate_limit="20/s"` with `limit_key` (the API key) on `bench_io.chat_limited`,'
        " enforced in Redis for every process: each step gets a turn, 52 ms apart (20 per"
        " second, 10 ms for a late start and 30 ms for the way to the API), and its call"
        " starts at its turn, at most 10 ms late or"
        " it takes a new one; a turn more than 1 s off is waited for as an ETA retry that"
        " holds no worker slot, a nearer one on the worker's event loop. Asyncio pools of"
        f" {sz['limit_aio_concurrency']}. Celery:"
        ' `rate_limit="20/s"` on the task, which each worker process enforces for itself'
        f" (threads pools of {sz['limit_threads']}), so the API sees up to"
        f" {sz['limit_workers']} × 20/s. Calls refused with 429 are not retried on either"
        " side: the figures are what the API saw. Requests received in any 1 s count the"
        " refused ones too, from the send times the calls record (the API's own per-second"
        " count is of accepted calls, which its quota caps at 20). The ideal run takes"
        f" {sz['limit_calls']} / 20 = {sz['limit_calls'] / 20:g} s.\n"
    )
    lim_rows = [
        ("calls", "calls", 0, 1.0, ""),
        ("wall time (s)", "wall_s", 2, 1.0, ""),
        ("wall time vs the ideal", "off_ideal", 1, 100.0, "%"),
        ("requests the API received in any 1 s, at most", "max_sent_per_second", 0, 1.0, ""),
        ("the API's 429 refusals", "rejected_429", 0, 1.0, ""),
        ("the API's accepted calls", "accepted", 0, 1.0, ""),
        ("the API's most accepted in any 1 s (its quota caps it)", "max_per_second", 0, 1.0, ""),
        ("the API's first → last accepted call (s)", "span_s", 2, 1.0, ""),
        ("calls sent < 25 ms (half the interval) after the one before", "close_sends", 0, 1.0, ""),
    ]
    add(
        table(
            [
                "",
                f"Baton: limit in Redis, {sz['limit_workers']} processes",
                f"Celery: `rate_limit` per worker, {sz['limit_workers']} processes",
            ],
            [
                [label, *(_fmt(_io_vals(lim[s], key, k), d, u) for s in ("baton", "celery"))]
                for label, key, d, k, u in lim_rows
            ],
        )
    )
    add("\n### 8c. Streamed output\n")
    add(
        f"A step emits {sz['emits']} small values {sz['emit_gap_ms']:g} ms apart, each"
        " carrying `time.time()` at the emit; the benchmark's main process (not the"
        " worker's) reads them and records arrival − emit time. Baton: `step.emit(...)` in"
        " an async step, read with `orchestrator.stream(workflow_id)` (a Redis Stream, read"
        ' with blocking `XREAD`). Celery: `self.update_state(state="PROGRESS",'
        f" meta=...)`, read by polling `AsyncResult(id).info` every {sz['poll_ms']:g} ms"
        " (the result backend is the same private Redis); a value overwritten between two"
        " polls is never seen, so Celery's latencies are over the values it saw. Each run"
        " follows a 5-value warm-up run.\n"
    )
    st_rows = [
        ("values emitted", "emitted", 0),
        ("values the reader saw", "seen", 0),
        ("median latency (ms)", "median_ms", 2),
        ("p95 latency (ms)", "p95_ms", 2),
        ("max latency (ms)", "max_ms", 2),
    ]
    add(
        table(
            [
                "",
                "Baton: `orchestrator.stream()`",
                f"Celery: `update_state`, polled every {sz['poll_ms']:g} ms",
            ],
            [
                [label, *(_fmt(_io_vals(stream[s], key), d) for s in ("baton", "celery"))]
                for label, key, d in st_rows
            ],
        )
    )
    return "\n".join(out) + "\n"


def waits_targets(runs: list[dict[str, Any]]) -> str:
    """Signals and timers (section 9) against their targets, on every run (the worst)."""
    sig = [float(r["signal"]["median_ms"]) for r in runs]
    late = [float(r["baton_sleepers"]["p99_late_s"]) for r in runs]
    c_late = [float(r["celery_countdown"]["p99_late_s"]) for r in runs]
    n = runs[0]["baton_sleepers"]["n"]
    rows = [
        ["Signal → next step started, median (ms)", _fmt(sig, 2), "–", "–", "≤ 10 ms",
         _met(max(sig) <= 10)],
        [f"{n:,} workflows sleeping, then waking: p99 lateness (s)", _fmt(late, 2),
         _fmt(c_late, 2), "–", "≤ 1 s", _met(max(late) <= 1)],
    ]  # fmt: skip
    return (
        "Signals and durable timers (section 9; Celery: `countdown=` ETAs), over"
        f" {len(runs)} run(s), each judged:\n\n" + table(HEAD, rows)
    )


#: Section 10's targets: the map's wall time against each chord's (per run, the worst),
#: the largest map's bytes per message and memory per item against the smallest's.
MAPS_TARGETS = {"chord": 0.5, "chunked": 1.0, "flat": 1.05, "linear": 1.25}


def maps_targets(runs: list[dict[str, Any]]) -> str:
    """Maps (section 10) against their targets, on every run (the worst)."""
    t, sz = MAPS_TARGETS, runs[0]["sizes"]
    n, small, big = sz["items"], sz["scale"][0], sz["scale"][-1]
    # (a run whose map or chord was lost is left out of the figures, and fails the target)
    wall = [float(b["wall_s"]) for b in maps.done([r["baton"]["timed"] for r in runs])]
    scale = [r["baton"]["scale"] for r in runs]

    def vs(other: str, label: str, bound: float) -> list[str]:
        c = [float(x["wall_s"]) for x in maps.done([r["celery"][other] for r in runs])]
        ratio = maps.ratios(runs, other)
        ok = len(ratio) == len(runs) and max(ratio) <= bound
        return [label, _fmt(wall, 2), _fmt(c, 2), _fmt(ratio, 2, "×"), f"≤ {bound:.1f}×",
                _met(ok)]  # fmt: skip

    def grows(field: str, label: str, bound: float, what: str, digits: int = 0) -> list[str]:
        lo = [float(x[field]) for x in maps.done([s[0] for s in scale])]
        hi = [float(x[field]) for x in maps.done([s[-1] for s in scale])]
        ratio = maps.scale_ratio(runs, field)
        # (NaN: nothing measured)
        ok = len(ratio) == len(runs) and all(x == x for x in ratio) and max(ratio) <= bound
        return [label, f"{_fmt(lo, digits)} → {_fmt(hi, digits)}", "–", _fmt(ratio, 2, "×"),
                f"{what} (≤ {bound:g}×)", _met(ok)]  # fmt: skip

    done = [float(x["wall_s"]) for x in maps.done([s[-1] for s in scale])]
    rows = [
        vs("chord", f"Map of {n:,} items vs a chord of {n:,} tasks, wall (s)", t["chord"]),
        vs("chunked", f"Map of {n:,} items vs a chord over chunks of {sz['chunk']}, wall (s)",
           t["chunked"]),
        grows("bytes_per_message_max", f"Map task message, largest (bytes), {small:,} →"
              f" {big:,} items", t["flat"], "flat"),
        grows("keys_bytes_per_item", f"Map Redis memory per item (bytes), {small:,} →"
              f" {big:,} items", t["linear"], "linear"),
        [f"Map of {big:,} items on {runs[0]['cores']} cores, wall (s)", _fmt(done, 2), "–", "–",
         "completes", _met(len(done) == len(runs))],
    ]  # fmt: skip
    return (
        "Maps over run-time lists (section 10; Celery: a chord, and a chord over `chunks`),"
        f" over {len(runs)} run(s), each judged:\n\n" + table(HEAD, rows)
    )


def map_limits_section(res: dict[str, Any]) -> str:
    """Section 11 (bench/map_limits.py; imported here only: it registers its agents)."""
    from bench import map_limits

    return map_limits.section(res)


def only_markdown(data: dict[str, Any], only: str) -> str:
    """The report of ``python -m bench --only io|waits|maps|map_limits``: those scenarios
    alone."""
    title = {
        "io": "agents that call the outside world",
        "waits": "signals and timers",
        "maps": "maps over run-time lists",
        "map_limits": "limits inside maps",
    }[only]
    sides = "Baton" if only == "map_limits" else "Baton vs bare Celery"
    out = [
        f"# Benchmarks: {title} ({sides})\n",
        f"Written by `python -m bench --only {only}` from a real run"
        f" ({data['elapsed_s'] / 60:.1f} min, {data['finished']}); the full report is"
        " `docs/benchmarks.md`.\n",
    ]
    render: dict[str, tuple[Callable[[Any], str] | None, Callable[[Any], str]]] = {
        "io": (io_targets, io_section),
        "waits": (waits_targets, waits.section),
        "maps": (maps_targets, maps.section),
        "map_limits": (None, map_limits_section),
    }
    targets, section = render[only]
    if targets:
        out += ["## Targets\n", targets(data[only])]
    if only != "waits":  # (section 9 counts its lost countdown tasks itself)
        out.append(lost_runs({}, {}, more=more_lost(data)).strip("\n"))
    out += [
        "\n## Machine\n",
        table(["", ""], [[k, str(v)] for k, v in data["machine"].items()]),
        "",
        section(data[only]),
    ]
    return "\n".join(out)


HOW_BATON_GETS_THERE = """
## How Baton gets there

A Baton step does more than a bare Celery task (it loads the state, takes a lease, and
commits a versioned handoff with its history), so it can only match Celery by not doing
what Celery does twice:

- **The commit sends the next message.** The committing step encodes the next task's
  message itself, exactly as Celery and kombu's Redis transport would
  (`orchestration/flow/wire.py`, used by `orchestration/flow/outbox.py`: about 45 µs, against
  about 600 µs for `apply_async`, which looks up the routing table, takes a producer
  and publishes a `task-sent` event in round trips of its own), and the commit script
  pushes it with the `task-sent` event in the same atomic step. Celery's
  chain callback does not run: there is no chain in the message.
- **No Celery result.** Every task is `ignore_result`; the state store already holds the
  step's result. A group's completion is counted in the commit script beside the results
  (Celery's chord would store each member's result again and count them in a key of its
  own); its callback is encoded once when the group starts.
- **One script to start a workflow.** `run_workflow()` validates, stores, starts and sends
  the first messages in one `create.lua` call; a big group's members follow a batch per
  script, so workers start on the first ones at once.
- **Less in the worker's Python.** One lease-renewing thread per process (a thread per
  step cost about 0.1 ms), cheap argument reprs, hiredis for replies.
- **A quiet client.** `wait()` listens on the workflow's status channel only, on a pub/sub
  connection each thread keeps, so it is woken once, not at every step.

What is left is Celery's own per-message work in the worker (receiving, three task
events, the late ack), which both sides pay alike: in a fan-out of 1,000 on 2 cores the
worker's consumer process is the bottleneck on both sides (about 1 ms of its CPU per
member), which is why fan-out comes out near parity rather than well below it.
"""


GROUPS = {
    "Baton engine in the worker (state load, commit, bookkeeping)": (
        "plan_load",
        "begin_step",
        "validate_params",
        "engine_other",
        "commit",
        "track",
        "note",
        "next_signature",
        "outbox",
        "publish",
    ),
    "the agent itself (no-op)": ("agent",),
    "Celery in the worker (tracer, signals; for Baton no publishing: the commit sends)": (
        "celery_other",
        "celery_publish_next",
    ),
    "broker hop and pool hand-off": ("hop", "pool"),
}


def _grouped(ph: dict[str, float]) -> str:
    """The step's phases summed by who spends them, per step and per 5-step workflow."""
    rows = []
    for label, keys in GROUPS.items():
        ms = sum(max(ph.get(k, 0.0), 0.0) for k in keys)
        rows.append([label, f"{ms:.2f}", f"{5 * ms:.1f}"])
    rows.append(
        ["client `run_workflow()` (once per workflow)", "", f"{ph.get('client_total', 0):.1f}"]
    )
    rows.append(
        ["client: last commit → `wait()` returns (once)", "", f"{ph.get('client_wait', 0):.1f}"]
    )
    return "\nBy owner:\n\n" + table(["who", "ms / step", "ms / 5-step workflow"], rows)


def profile_section(prof: dict[str, Any], notes: str) -> str:
    out = ["## Where a Baton step's time goes\n"]
    out.append(
        f"A separate session of {prof['runs']} sequential 5-step workflows with timing"
        " wrappers around the engine's phases (`bench/profiling.py`; the engine is not"
        " changed) and Celery's `task_received`/`task_prerun`/`task_postrun` signals, and"
        " then `py-spy` sampling the worker processes over a second batch (not the timed"
        " one). Medians per step, in milliseconds; the wrappers add a few microseconds each."
        " Times are exclusive: a wrapped call nested in another is charged to itself only.\n"
    )
    names = {
        "client_validate": "client: `load_plan` (definition validation)",
        "client_create": "client: `store.create` (create.lua: stores, starts, sends)",
        "client_outbox": "client: encoding the first task messages (`Outbox.outgoing`)",
        "client_status": "client: `status_of` (HGET; in `wait()`, while the steps run)",
        "client_plan": "client: `store.plan` (GET + parse)",
        "client_transition": "client: `store.transition` (transition.lua)",
        "client_publish": "client: first publish (`apply_async` of the first segment)",
        "client_other": "client: rest of `run_workflow` (signature building, ids)",
        "client_total": "= client `run_workflow()` total",
        "hop": "broker: previous step's commit starts (it pushes the message) → consumer"
        " receives (BRPOP)",
        "pool": "worker: received → prerun (hand-off to the pool child)",
        "plan_load": "worker: `store.plan` / `store.task` (cached per process)",
        "begin_step": "worker: `begin_step` (begin script + state reads, decode)",
        "validate_params": "worker: parameter validation",
        "agent": "worker: the agent function (`TaskType.run`, output validation)",
        "engine_other": "worker: rest of `run_step` (StepInput, TaskResult, JSON dumps, ...)",
        "commit": "worker: `store.commit` (commit script; it also pushes the next message)",
        "outbox": "worker: encoding the next task messages (`Outbox.outgoing`)",
        "track": "worker: `store.track` (task ids of what it publishes)",
        "note": "worker: `StateStore.append_history` (history entries)",
        "next_signature": "worker: `next_signature` (building the next segment)",
        "publish": "worker: engine publishes (`apply_async` inside `run_step`)",
        "celery_other": "worker: Celery tracer around the task (result, signals, ...)",
        "celery_publish_next": "worker: Celery publishing the chain's next message",
        "in_task": "= worker in-task total (prerun → postrun)",
        "client_wait": "client: last commit → `wait()` returns",
    }
    rows = [[names.get(k, k), f"{v:.2f}"] for k, v in prof["phases"].items()]
    out.append(table(["phase", "ms"], rows))
    out.append(_grouped(prof["phases"]))
    if prof.get("top"):
        out.append(
            "\nWhere the worker processes' busy time goes (py-spy, inclusive share of all"
            " busy samples of the worker's parent and pool children):\n"
        )
        out.append(table(["frame", "share"], [[f, f"{s:.1%}"] for f, s in prof["top"]]))
    if notes:
        out.append("\n" + notes)
    return "\n".join(out) + "\n"
