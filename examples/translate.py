# examples/translate.py  (in your project: myproject/translate.py)
import os

import aiohttp
from pydantic import BaseModel, ConfigDict

from agents import Agent, StepInput

# At most 50 of its steps at once, across every worker process and machine.
translator = Agent("translator", description="Translates with a chat model", concurrency_limit=50)


class TranslateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    language: str = "French"
    tenant: str = "default"


# 60 a minute for each tenant, however many workers run it.
@translator.task(params=TranslateParams, rate_limit="60/m", limit_key=lambda p: p.tenant)
async def translate(step: StepInput[TranslateParams]) -> dict:
    p = step.parameters
    step.progress(0, 1, f"asking for {p.language}")
    async with aiohttp.ClientSession() as http:
        reply = await http.post(
            os.environ["BATON_LLM_BASE_URL"] + "/chat/completions",
            headers={"Authorization": f"Bearer {os.environ['BATON_LLM_API_KEY']}"},
            json={
                "model": os.environ.get("BATON_LLM_MODEL", "gpt-4o-mini"),
                "messages": [{"role": "user", "content": f"Into {p.language}: {p.text}"}],
            },
            raise_for_status=True,
        )
        text = (await reply.json())["choices"][0]["message"]["content"]
    step.emit(text)  # watchers see it now; the output is committed when the step ends
    step.progress(1, 1)
    return {"language": p.language, "text": text}
