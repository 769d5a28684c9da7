"""Reading the failover ledger (``tests/failover_agents.py``) and judging it: pure functions,
shared by ``tests/test_failover.py`` (which asserts) and ``bench/failover.py`` (which counts).

The ledger is the only witness outside Redis of what the workers were told: an agent run
(``{"run": token, "wf", "step", "task", "pid", "t"}``) and how each task message ended
(``{"end": task_id, "pid", "state", "retval", "t"}``). A step's commit was acknowledged
exactly when the end of its run's delivery is ``SUCCESS`` with a return value starting
``completed``. Whatever Redis lost in a failover, these lines were written before or after
it, so the final state can be checked against them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Entry = dict[str, Any]

STEPS = 5  # the ledger workflow's steps


def flow(n: int) -> dict[str, Any]:
    """The workflow both the failover tests and the failover bench run: five digests of a
    few ms each on the ``ledger`` agent (defined here, where no agent is registered, so
    importing it at test collection starts no worker with an agent it lacks)."""
    steps = [
        {"agent_id": "ledger", "task_type": "digest", "output_key": f"d{i}",
         "parameters": {"values": list(range(n, n + 50 + i))}}
        for i in range(STEPS)
    ]  # fmt: skip
    return {"name": f"failover {n}", "steps": steps}


def read_ledger(path: Path) -> list[Entry]:
    """Every line of the ledger, in the order written (none yet: empty)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ends_of_runs(entries: list[Entry]) -> dict[str, Entry] | None:
    """Each run's end (None while a run has none yet). A message may come more than once
    (given back, redelivered); a process runs one task at a time, so a run's end is the
    next end of its task in its process (an end with no run before it is a delivery that
    did not call the agent: its step done, or leased elsewhere)."""
    end_of: dict[str, Entry] = {}
    running: dict[tuple[str, int], str] = {}
    for e in entries:
        if "run" in e:
            running[(e["task"], e["pid"])] = e["run"]
        elif (run := running.pop((e["end"], e["pid"]), None)) is not None:
            end_of[run] = e
    return None if running else end_of


def acknowledged(end: Entry | None) -> bool:
    """Whether a run's end says its commit was acknowledged (by enough replicas)."""
    return bool(end and end["state"] == "SUCCESS" and str(end["retval"]).startswith("completed"))


@dataclass
class Audit:
    """What the ledger and the final state say together, for a set of workflows.

    Every list holds ``"<workflow> <step>"`` (``lost``: with the run) of a broken promise;
    all empty is the issue's checker passing. ``rerun_times``: when each agent run past a
    step's first began (its ledger ``t``, None for a ledger written without times), so a
    caller can tell which fault caused it.
    """

    steps: int = 0  # steps with a result in the final state
    acked: int = 0  # acknowledged commits in the ledger
    reruns: int = 0
    rerun_times: list[float | None] = field(default_factory=list)
    no_run: list[str] = field(default_factory=list)  # a result, but no run in the ledger
    # a result no delivery acknowledged: its commit landed (and reached a replica) but the
    # answer of its WAIT was cut by a fault, so its message went back and the next delivery
    # found the step done. Nothing acknowledged is lost and nothing ran twice: the issue's
    # promises hold, so this is counted, not a problem.
    not_acked: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)  # acknowledged more than once
    ran_after_ack: list[str] = field(default_factory=list)  # an agent run after its ack
    lost: list[str] = field(default_factory=list)  # an acked run the final state lacks

    def problems(self) -> list[str]:
        """Every broken promise, one line each (empty: the checker passes)."""
        return [
            *(f"{s} completed with no run in the ledger" for s in self.no_run),
            *(f"{s}: acknowledged more than once" for s in self.twice),
            *(f"{s}: ran again after its ack" for s in self.ran_after_ack),
            *(f"{s}: the final state holds a run other than the acknowledged one"
              for s in self.lost),
        ]  # fmt: skip


def audit(
    results: Mapping[str, Mapping[str, str | None]],
    entries: list[Entry],
    end_of: Mapping[str, Entry],
) -> Audit:
    """Judge the workflows in ``results`` (workflow id -> step id -> the run token its final
    state holds, None if the step has no result) against the ledger: each step completed
    is acknowledged at most once, by its last run, and the final state holds that run; an
    acknowledged run of a step with no result (a workflow that did not finish) is lost."""
    runs: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        if "run" in e and e["wf"] in results:
            runs[(e["wf"], e["step"])].append(e)
    out = Audit()
    steps = {(wf, s) for wf, by_step in results.items() for s in by_step} | set(runs)
    for wf, step in sorted(steps):
        token = results.get(wf, {}).get(step)
        attempts = runs[(wf, step)]
        acked = [a for a in attempts if acknowledged(end_of.get(a["run"]))]
        where = f"{wf} {step}"
        out.acked += len(acked)
        out.lost += [f"{where} {a['run']}" for a in acked if a["run"] != token]
        if len(acked) > 1:
            out.twice.append(where)
        if acked and acked[-1] is not attempts[-1]:
            out.ran_after_ack.append(where)
        out.reruns += max(0, len(attempts) - 1)
        out.rerun_times += [a.get("t") for a in attempts[1:]]
        if token is None:
            continue  # (not completed: judged only by what was acknowledged)
        out.steps += 1
        if not attempts:
            out.no_run.append(where)
        elif not acked:
            out.not_acked.append(where)
    return out


__all__ = ["Audit", "Entry", "acknowledged", "audit", "ends_of_runs", "read_ledger"]
