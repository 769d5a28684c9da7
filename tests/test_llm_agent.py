"""The llm agent called as a function against a real HTTP server on loopback.

``workers/llm_loopback.py`` speaks OpenAI's chat-completions wire format, in a process of
its own started by ``tests/llm_server.py``; its reply is a digest of the prompt, so the
expected summaries are computed here (by hand for a small input, with the server's own
``reply_for`` for the prompt it saw).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agents import llm
from agents.registry import load_agents
from orchestration.definition import load_plan
from orchestration.errors import RateLimited, StepError
from orchestration.settings import get_settings
from tests.llm_server import LLMServer, reply_for, tokens_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "llm_summary.yaml"
KEYS = {"default": "sk-default-7f3a9c", "team_b": "sk-team-b-41d2e8", "tiny": "sk-tiny-0b6c55"}

registry = load_agents()
summarise = registry.get_task("llm", "summarise")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    keys = [KEYS["default"], KEYS["team_b"], f"{KEYS['tiny']}=1"]
    with LLMServer(keys, quota_per_second=1000, token_delay=0.002) as s:
        yield s


def point_at(mp: pytest.MonkeyPatch, url: str, **keys: str) -> None:
    """The llm settings for a test: this server, these keys (id -> key), nothing else."""
    mp.setenv("BATON_LLM_BASE_URL", url)
    mp.setenv("BATON_LLM_MODEL", "baton-test-model")
    for name in ("BATON_LLM_API_KEY", *(f"BATON_LLM_API_KEY_{i.upper()}" for i in KEYS)):
        mp.delenv(name, raising=False)
    for key_id, key in keys.items():
        suffix = "" if key_id == "default" else f"_{key_id.upper()}"
        mp.setenv(f"BATON_LLM_API_KEY{suffix}", key)
    get_settings.cache_clear()


@pytest.fixture
def env(server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    server.reset()
    point_at(monkeypatch, server.url, **KEYS)
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def step_for(params: dict[str, Any], shared: dict[str, Any], step_id: str = "summary") -> Any:
    return summarise.input_for("wf-llm", step_id, params, shared, [])


def run(params: dict[str, Any], shared: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    step = step_for(params, shared)
    return summarise.run(step).output, step


def failure(params: dict[str, Any], shared: dict[str, Any]) -> StepError:
    with pytest.raises(StepError) as info:
        run(params, shared)
    return info.value


FIGURES = {"figures": {"revenue": 1200.5, "orders": 30, "region": "North"}}


def test_summary_is_the_servers_digest_streamed_in_batches(
    server: LLMServer, env: pytest.MonkeyPatch
) -> None:
    out, step = run({"input_key": "figures"}, FIGURES)
    # The prompt held 'figures (JSON):' and the value; worked out by hand from it:
    assert out["summary"] == (
        "The input has 6 words and 2 numbers. The numbers run from 30 to 1200.5, sum 1230.5, "
        "mean 615.25. The first are 1200.5, 30. The most frequent words are figures (1), "
        "json (1), revenue (1), orders (1), region (1), north (1)."
    )
    assert out["model"] == "baton-test-model"  # BATON_LLM_MODEL, as the server echoed it
    assert out["finish_reason"] == "stop" and out["input_key"] == "figures"

    emitted = [json.loads(d) for _, e, d in step.emitted if e == "emitted"]
    progress = [json.loads(d) for _, e, d in step.emitted if e == "progress"]
    completion = len(out["summary"].split())
    assert len(emitted) >= 2 and all(isinstance(b, str) for b in emitted)
    assert "".join(emitted) == out["summary"]
    assert all(len(tokens_of(b)) <= llm.BATCH_TOKENS for b in emitted)
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert progress[-1]["done"] == completion and progress[-1]["total"] == 256

    sent = server.stats()["keys"][KEYS["default"]]["last_request"]
    assert sent["model"] == "baton-test-model" and sent["max_tokens"] == 256 and sent["stream"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][0]["content"] == llm.DEFAULT_INSTRUCTIONS
    prompt = sum(len(m["content"].split()) for m in sent["messages"])
    assert out["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "source": "server",
    }


def test_a_real_analysis_goes_compactly_and_comes_back_summarised(
    server: LLMServer, env: pytest.MonkeyPatch
) -> None:
    shared: dict[str, Any] = {}
    for agent, task, params, key in [
        ("data_processor", "extract_data", {"source": "business_db"}, "extracted_records"),
        ("data_processor", "clean_data", {"validation_rules": ["check_nulls"]}, "cleaned_records"),
        ("analyzer", "statistical_analysis", {}, "analysis_results"),
    ]:
        tt = registry.get_task(agent, task)
        shared[key] = tt.run(tt.input_for("wf-llm", key, params, shared, [])).output
    out, _ = run({"input_key": "analysis_results", "instructions": "Be brief."}, shared)
    sent = server.stats()["keys"][KEYS["default"]]["last_request"]["messages"]
    compact = json.dumps(shared["analysis_results"], separators=(",", ":"), ensure_ascii=False)
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"analysis_results (JSON):\n{compact}"},
    ]
    assert out["summary"] == reply_for(sent)


def test_a_long_input_is_cut_and_says_so(server: LLMServer, env: pytest.MonkeyPatch) -> None:
    big = {"values": list(range(5000))}
    out, _ = run({"input_key": "values", "max_tokens": 5}, {"values": big})
    user = server.stats()["keys"][KEYS["default"]]["last_request"]["messages"][1]["content"]
    whole = len(json.dumps(big, separators=(",", ":")))
    assert len(user.encode()) < llm.MAX_INPUT_BYTES + 200 < whole
    assert user.endswith(f"[cut: the input is {whole:,} bytes of JSON; the first 12,288 shown]")
    # max_tokens reached: the first five tokens of the digest, and the reason why.
    assert out["summary"] == "".join(tokens_of(reply_for([{"role": "user", "content": user}]))[:5])
    assert out["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 5


def test_each_api_key_id_sends_its_own_key_and_is_the_limit_key(
    server: LLMServer, env: pytest.MonkeyPatch
) -> None:
    run({"input_key": "figures", "api_key_id": "team_b"}, FIGURES)
    run({"input_key": "figures"}, FIGURES)
    run({"input_key": "figures", "api_key_id": "team_b"}, FIGURES)
    keys = server.stats()["keys"]
    assert keys[KEYS["team_b"]]["accepted"] == 2 and keys[KEYS["default"]]["accepted"] == 1
    assert server.stats()["unauthorized"] == 0
    params = summarise.validate_params({"input_key": "figures", "api_key_id": "team_b"})
    [agent_limit, task_limit] = summarise.limits
    assert (agent_limit.name, agent_limit.values.concurrency) == ("llm", 50)
    assert task_limit.name == "llm.summarise" and str(task_limit.values.rate) == "60/m"
    assert task_limit.key_for(params) == "team_b"  # the id, never the key
    assert summarise.reads_for(params) == ["figures"] and summarise.is_async


def test_429_is_retryable_and_gives_retry_after(server: LLMServer, env: pytest.MonkeyPatch) -> None:
    run({"input_key": "figures", "api_key_id": "tiny"}, FIGURES)  # the quota is 1 a second
    err = failure({"input_key": "figures", "api_key_id": "tiny"}, FIGURES)
    assert err.retryable and isinstance(err, RateLimited)
    assert "429" in str(err) and "Retry-After: 1 s" in str(err) and err.retry_after == 1.0
    stats = server.stats()["keys"][KEYS["tiny"]]
    assert (stats["accepted"], stats["rejected_429"], stats["max_per_second"]) == (1, 1, 1)


def test_a_wrong_key_fails_at_once_without_showing_it(
    server: LLMServer, env: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-5e1d0f9a77"
    point_at(env, server.url, default=wrong)
    err = failure({"input_key": "figures"}, FIGURES)
    assert not err.retryable
    assert "401" in str(err) and "Incorrect API key" in str(err) and "BATON_LLM_API_KEY" in str(err)
    assert wrong not in str(err) and wrong not in repr(err.args)  # the server echoed it
    assert server.stats()["unauthorized"] == 1


def test_no_key_configured_names_the_variable_to_set(env: pytest.MonkeyPatch) -> None:
    env.delenv("BATON_LLM_API_KEY")
    get_settings.cache_clear()
    err = failure({"input_key": "figures"}, FIGURES)
    assert not err.retryable and "set BATON_LLM_API_KEY" in str(err)
    err = failure({"input_key": "figures", "api_key_id": "nightly"}, FIGURES)
    assert not err.retryable and "set BATON_LLM_API_KEY_NIGHTLY" in str(err)


def test_an_unreachable_api_is_retryable(env: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    point_at(env, f"http://127.0.0.1:{port}/v1", default=KEYS["default"])
    err = failure({"input_key": "figures"}, FIGURES)
    assert err.retryable and "ClientConnectorError" in str(err) and KEYS["default"] not in str(err)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="extra"):
        summarise.validate_params({"input_key": "x", "temprature": 1})
    with pytest.raises(ValueError, match="api_key_id"):
        summarise.validate_params({"input_key": "x", "api_key_id": "a b"})
    with pytest.raises(ValueError, match="input_key"):
        summarise.validate_params({})


def test_200_concurrent_slow_requests_in_one_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    with LLMServer(["sk-slow"], quota_per_second=10_000, delay=0.5) as slow:
        point_at(monkeypatch, slow.url, default="sk-slow")

        async def many() -> tuple[list[Any], aiohttp.ClientSession]:
            steps = [step_for({"input_key": "figures"}, FIGURES, f"s{i}") for i in range(200)]
            held = await llm.session()
            outs = await asyncio.gather(*(summarise.arun(s) for s in steps))
            assert await llm.session() is held  # kept on the loop, for every step on it
            return [o.output for o in outs], held

        try:
            outs, held = asyncio.run(many())
        finally:
            get_settings.cache_clear()
        stats = slow.stats()["keys"]["sk-slow"]
    assert held.closed and not llm._loops  # closed with the loop
    # All at once on one connection each (serially they would be 200 x 0.5 s).
    assert stats["accepted"] == 200 and stats["max_in_flight"] >= 150
    assert {o["summary"] for o in outs} == {reply_for(stats["last_request"]["messages"])}


def test_the_example_workflow_reports_the_summary(
    server: LLMServer, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("BATON_REPORTS_DIR", str(tmp_path / "reports"))
    get_settings.cache_clear()
    plan = load_plan(EXAMPLE, registry)  # every step and read checked, as at creation
    assert len(plan.tasks) == 5
    shared: dict[str, Any] = {}
    for i, s in enumerate(yaml.safe_load(EXAMPLE.read_text())["steps"]):
        tt = registry.get_task(s["agent_id"], s["task_type"])
        step = tt.input_for("wf-example", f"step_{i + 1}", s["parameters"], shared, [])
        shared[s["output_key"]] = tt.run(step).output
    summary = shared["executive_summary"]["summary"]
    assert summary == reply_for(server.stats()["keys"][KEYS["default"]]["last_request"]["messages"])
    report = shared["final_report"]
    assert "Results: executive_summary" in report["sections"]
    assert summary in report["content"]
    assert Path(report["report_path"]).is_relative_to(tmp_path)
