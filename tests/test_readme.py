"""The README runs as printed, from a fresh clone.

Every Python block is a file under ``examples/``: each block starts with a comment naming its
file, and must equal that file; the files run here as a user would run them: a fresh
process, no ``BATON_REDIS_URL`` (so the embedded Redis and local workers), no
``PYTHONPATH``, from the project's root. Every YAML block is a definition (or a fragment of
one) that compiles against the agents' catalog; every shell block calls the activated
virtualenv's programs, and its ``baton`` commands parse; every file it cites exists; the
LLM example runs on the loopback API with the commands it gives.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import yaml

from orchestration.client.agents import load_catalog
from orchestration.definition import compile_plan, read_definition

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "PYTHONPATH"))}
    return {**env, "BATON_HOME": str(home), **extra}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    ran = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.split()[1])
def test_each_python_block_is_the_example_file_it_names(block: str) -> None:
    name = re.match(r"# (examples/\S+\.py)", block)
    assert name, f"a README block that names no examples/ file: {block[:60]!r}"
    assert (ROOT / name.group(1)).read_text() == block


def test_the_quickstart_runs_the_pipeline_on_embedded_redis(tmp_path: Path) -> None:
    ran = run(["examples/quickstart.py"], fresh_env(tmp_path))
    status, report = ran.stdout.split()[-2:]
    assert status == "completed"
    assert Path(report).is_file() and Path(report).read_text().startswith("# ")
    assert not list(ROOT.glob("appendonly*")) and not (ROOT / "dump.rdb").exists()


def test_the_trip_runs_with_its_agents_from_the_current_directory(tmp_path: Path) -> None:
    ran = run(["examples/trip.py"], fresh_env(tmp_path, BATON_AGENT_MODULES="examples.trip_agents"))
    last = ran.stdout.strip().splitlines()[-1]
    assert last == "completed {'flight': 'BA117', 'seat': '1A', 'amount': 412.5}"


def test_the_agent_example_registers_and_scores_records(tmp_path: Path) -> None:
    script = (
        "from agents import StepInput, registry\n"
        "import examples.sentiment as s\n"
        "records = [{'review': 'great seat, good food'}, {'review': 'broken tray'}]\n"
        "step = StepInput(workflow_id='w', step_id='step_1', agent_id='sentiment',\n"
        "    task_type='score_reviews', parameters=s.SentimentParams(),\n"
        "    shared_data={'cleaned_records': {'records': records}})\n"
        "print(registry.get_agent('sentiment').queue, s.score_reviews(step))\n"
    )
    ran = run(["-c", script], fresh_env(tmp_path))
    assert ran.stdout.strip() == ("agent.sentiment {'scored': 2, 'positive': 2, 'negative': 1}")


def test_the_async_agent_example_calls_a_chat_api_under_its_limits(tmp_path: Path) -> None:
    from tests.llm_server import LLMServer, reply_for

    script = (
        "import json\n"
        "from agents import registry\n"
        "import examples.translate\n"
        "tt = registry.get_task('translator', 'translate')\n"
        "step = tt.input_for('w', 'step_1', {'text': 'good morning', 'language': 'German'},"
        " {}, [])\n"
        "print(json.dumps([tt.is_async, [str(lim.values.rate) for lim in tt.limits],"
        " tt.run(step).output, step.emitted]))\n"
    )
    with LLMServer(keys=("sk-readme",)) as llm:
        env = fresh_env(tmp_path, BATON_LLM_BASE_URL=llm.url, BATON_LLM_API_KEY="sk-readme")
        ran = run(["-c", script], env)
        assert llm.stats()["keys"]["sk-readme"]["accepted"] == 1
    is_async, rates, output, emitted = json.loads(ran.stdout)
    text = reply_for([{"role": "user", "content": "Into German: good morning"}])
    assert (is_async, rates, output) == (
        True,
        ["None", "60/m"],
        {"language": "German", "text": text},
    )
    assert [e[1] for e in emitted] == ["progress", "emitted", "progress"]
    assert json.loads(emitted[1][2]) == text


def test_the_segment_review_runs_from_the_readme(tmp_path: Path) -> None:
    """The README's two commands, as printed: register the pipeline, run the review."""
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "segment_review" in b]
    commands = [line.split("#")[0].split() for line in block.strip().splitlines()]
    assert [c[:2] for c in commands] == [["baton", "register"], ["baton", "run"]]
    env = fresh_env(tmp_path)
    name = run(["-m", "workers.cli", *commands[0][1:]], env).stdout.strip()
    assert name == "Data Analysis Pipeline"
    out = run(["-m", "workers.cli", *commands[1][1:]], env).stdout
    wid = out.split()[0]
    assert f"Segment Review {wid}: completed" in out
    report = (tmp_path / "reports" / wid / "report.md").read_text()
    # The map's outputs (one row per region found), the classification, the child's report.
    table = report.split("## Results: segment_scores", 1)[1].split("##", 1)[0]
    regions = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert regions[1:] == ["Atlantis", "Central", "East", "North", "South", "West"]
    assert "| label | balanced |" in report and "| top_segment | East |" in report
    child = tmp_path / "reports" / f"{wid}.step_7" / "report.md"
    assert child.is_file() and f"| report_path | {child} |" in report


# --------------------------------------------------------------------------- YAML snippets

YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)


def _made(node: Any) -> set[str]:
    """Every key a raw definition (or a piece of one) makes: its output_keys, and the
    parent keys of its sub-workflows' ``outputs``."""
    if isinstance(node, list):
        return set().union(*map(_made, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    made = {node["output_key"]} if isinstance(node.get("output_key"), str) else set()
    if isinstance(node.get("workflow"), str | dict) and isinstance(node.get("outputs"), dict):
        made |= set(node["outputs"])
    return made.union(*(_made(v) for k, v in node.items() if k != "workflow"))


def _examples() -> dict[str, Any]:
    """The shipped YAML workflows, by name."""
    shipped = (yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml")))
    return {d["name"]: d for d in shipped}


def _inline_registered(node: Any, examples: dict[str, Any]) -> Any:
    """Sub-workflows named by a name, inlined from the example of that name (what ``baton
    register examples/<file>.yaml`` makes resolvable)."""
    if isinstance(node, list):
        return [_inline_registered(n, examples) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline_registered(v, examples) for k, v in node.items()}
    if isinstance(node.get("workflow"), str):
        assert node["workflow"] in examples, f"no example is named {node['workflow']!r}"
        out["workflow"] = examples[node["workflow"]]
    return out


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: b.split(":")[0].strip("- "))
def test_each_yaml_block_is_a_valid_definition_or_fragment(block: str) -> None:
    """Every YAML block is read and compiled as ``baton run`` would, against the catalog.

    A block with ``steps`` is a whole definition. A block that is a list is a fragment: a
    few steps cut from a workflow. It is wrapped as ``{"name": ..., "steps": <the list>}``
    and compiled with ``initial``, the keys shared_data holds before it, set to the keys the
    shipped ``examples/*.yaml`` workflows make (the fragments are cut from those), less the
    keys the fragment makes itself. Every other check is the real one: agents, task types,
    parameters, paths into keys, every way of a branch, the aggregate. A sub-workflow named
    by a name is inlined from the example of that name, as if registered.
    """
    examples = _examples()
    raw = _inline_registered(yaml.safe_load(block), examples)
    if isinstance(raw, dict) and "steps" in raw:
        definition, initial = raw, set()
    else:
        assert isinstance(raw, list), f"a YAML block that is neither steps nor a workflow: {raw}"
        definition = {"name": "README fragment", "steps": raw}
        initial = set().union(*map(_made, examples.values())) - _made(raw)
    plan = compile_plan(read_definition(definition), load_catalog(), initial=initial)
    assert plan.nodes


def test_an_empty_default_is_a_branch_without_one() -> None:
    """``default: []`` (the README's branch) plans as no default: a value no case names
    takes no way."""
    case = [{"agent_id": "enricher", "task_type": "enrich_records", "output_key": "e"}]
    branch = {"on": "c.label", "cases": {"x": case}}
    plans = [
        compile_plan(
            read_definition({"steps": [{"branch": b}]}),
            load_catalog(),
            initial={"c", "cleaned_records"},
        )
        for b in (branch, {**branch, "default": []})
    ]
    assert plans[0].nodes == plans[1].nodes
    assert plans[1].nodes[0].default is None  # type: ignore[union-attr]


# --------------------------------------------------------------------------- shell blocks

BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
#: Programs of the virtualenv (on the PATH once it is activated) and of any shell.
FROM_VENV = {"baton", "python", "celery", "redis-server", "redis-cli"}
SHELL = {"source", "export", "mkdir", "kill", "docker"}


def _commands(block: str) -> list[list[str]]:
    """A shell block's commands, each as its words (comments, ``&``, ``;`` and leading
    ``NAME=value`` assignments dropped); a quoted string may span lines."""
    out: list[list[str]] = []
    pending = ""
    for line in block.replace("\\\n", " ").splitlines():
        pending += line + "\n"
        lex = shlex.shlex(pending, posix=True, punctuation_chars=";&|")
        lex.whitespace_split, lex.commenters = True, "#"
        try:
            words = list(lex)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        pending = ""
        command: list[str] = []
        for word in [*words, ";"]:
            if word in {";", "&", "&&", "|", "||"}:
                while command and re.fullmatch(r"[A-Z_]+=\S*", command[0]):
                    command = command[1:]
                if command:
                    out.append(command)
                command = []
            else:
                command.append(word)
    assert not pending, f"an unclosed quote in {block!r}"
    return out


def _parse_baton(args: list[str]) -> None:
    """``baton ARGS`` parsed by the CLI as it would run them (nothing is run)."""
    import click

    from workers.cli import cli

    command: click.Command = cli
    ctx = click.Context(cli, info_name="baton")
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(ctx, args[0])
        assert sub is not None, f"baton has no command {' '.join(args)!r}"
        ctx = click.Context(sub, info_name=args[0], parent=ctx)
        command, args = sub, args[1:]
    command.make_context(ctx.info_name, list(args), parent=ctx.parent)


def test_every_shell_block_runs_in_the_activated_virtualenv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once ``./dev`` has made the virtualenv, the README says once to activate it and then
    calls its programs by name, never by a path into ``.venv/``; each one exists there, a
    ``python -m`` module can be imported, and every ``baton`` command parses as printed."""
    monkeypatch.chdir(ROOT)  # (file arguments are checked to exist, from the root)
    blocks = [_commands(b) for b in BASH_BLOCKS]
    first = [c[0] for c in blocks[0]]
    assert set(first) == {"./dev"}, "the quickstart block runs ./dev only"
    assert blocks[1] == [["source", ".venv/bin/activate"]], "then the virtualenv is activated"
    venv_bin = Path(sys.executable).parent
    for command in [c for block in blocks[2:] for c in block]:
        program = command[0]
        assert program in FROM_VENV | SHELL, f"{' '.join(command)}: {program} is not ours"
        if program in FROM_VENV:
            assert (venv_bin / program).exists(), f"no {program} in the virtualenv"
        if program == "python" and command[1] == "-m":
            assert importlib.util.find_spec(command[2]), command
        if program == "baton":
            _parse_baton(command[1:])
    assert ".venv/bin/" not in README.replace("source .venv/bin/activate", "")


# --------------------------------------------------------------------------- what it cites

PATH = re.compile(r"(?<![\w./-])((?:\.?[\w*-]+/)+[\w*.-]*\.(?:py|lua|md|yaml|yml|png|json))\b")


def test_every_file_the_readme_cites_is_in_a_clone() -> None:
    """Each ``dir/file.py`` (or .lua, .md, .yaml, .png, .json) it names exists (a glob
    such as ``workers/cli*.py`` matches something); ``myproject/`` stands for yours."""
    cited = {p for p in PATH.findall(README) if not p.startswith("myproject/")}
    assert len(cited) > 20
    missing = sorted(p for p in cited if not list(ROOT.glob(p)))
    assert missing == []


def test_how_it_works_names_only_files_that_exist() -> None:
    """The tree in "How it works": each ``name.py`` on a line is in the directory that line
    (or the line above it) starts with; a room (``model/``) is one of ``orchestration/``."""
    tree = README.split("## How it works", 1)[1].split("```", 2)[1]
    here, seen = ROOT, 0
    for line in tree.splitlines()[1:]:
        start = re.match(r"\s*(?:[a-z]+\s+)?([\w]+)/\s", line)
        if start:
            top = ROOT / start.group(1)
            here = top if top.is_dir() else ROOT / "orchestration" / start.group(1)
            assert here.is_dir(), line
        for name in re.findall(r"(?<![\w/*.])(\w+\.py)\b", line):
            assert (here / name).is_file(), f"{name} is not in {here.relative_to(ROOT)}/"
            seen += 1
    assert seen > 20


def test_the_statuses_line_names_every_status() -> None:
    from orchestration import WorkflowStatus

    [line] = re.findall(r"^Statuses: (.*?)\.\n", README, re.S | re.M)
    assert set(re.findall(r"`(\w+)`", line)) == {s.value for s in WorkflowStatus}


# --------------------------------------------------------------------------- the LLM example


def test_the_llm_example_runs_on_the_loopback_from_the_readme(tmp_path: Path) -> None:
    """The README's three commands: start the loopback, point the llm agent at it, run the
    example (embedded Redis and local workers, as ``baton run`` starts them). As printed,
    but for the port: 8000 may be taken on a shared machine, so the loopback is started on
    ``--port 0`` and the port it prints replaces 8000 in the exported URL."""
    from tests.llm_server import reply_for

    [block] = [b for b in BASH_BLOCKS if "llm_loopback" in b]
    [start], [point], [run_it] = (_commands(line) for line in block.strip().splitlines())
    assert block.strip().splitlines()[0].split("#")[0].rstrip().endswith("&")
    assert start[:2] == ["python", "-m"] and start[-2:] == ["--port", "8000"]
    assert point[0] == "export" and run_it[0] == "baton"
    loopback = subprocess.Popen(
        [sys.executable, *start[1:-1], "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert loopback.stdout is not None
        port = int(loopback.stdout.readline())
        exported = dict(a.split("=", 1) for a in point[1:])
        assert ":8000/" in exported["BATON_LLM_BASE_URL"]
        exported["BATON_LLM_BASE_URL"] = exported["BATON_LLM_BASE_URL"].replace(
            ":8000/", f":{port}/"
        )
        out = run(["-m", "workers.cli", *run_it[1:]], fresh_env(tmp_path, **exported)).stdout
        stats = json.loads(urlopen(f"http://127.0.0.1:{port}/stats", timeout=10).read())
    finally:
        loopback.terminate()
        loopback.wait(timeout=30)
        assert loopback.stdout is not None
        loopback.stdout.close()
    wid = out.split()[0]
    assert f"LLM Executive Summary {wid}: completed" in out
    [seen] = [s for s in stats["keys"].values() if s["accepted"]]
    assert seen["accepted"] == 1 and stats["unauthorized"] == 0
    digest = reply_for(seen["last_request"]["messages"])
    assert digest.startswith("The input has ")
    report = (tmp_path / "reports" / wid / "report.md").read_text()
    assert digest in report
