"""Every Python block in the README is a file under ``examples/``, and runs as printed.

Each block starts with a comment naming its file, and must equal that file; the files run
here as a user would run them: a fresh process, no ``BATON_REDIS_URL`` (so the embedded
Redis and local workers), no ``PYTHONPATH``, from the project's root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


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
    readme = (ROOT / "README.md").read_text()
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "segment_review" in b]
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
