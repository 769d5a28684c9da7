# examples/sentiment.py  (in your project: myproject/sentiment.py)
from pydantic import BaseModel, ConfigDict

from agents import Agent, StepInput


class SentimentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_key: str = "cleaned_records"


sentiment = Agent("sentiment", description="Scores review text")  # registers itself


@sentiment.task(params=SentimentParams)
def score_reviews(step: StepInput[SentimentParams]) -> dict:
    records = step.require(step.parameters.input_key)["records"]
    words = [str(r.get("review", "")).lower().split() for r in records]
    good = sum(w.count("great") + w.count("good") for w in words)
    bad = sum(w.count("bad") + w.count("broken") for w in words)
    return {"scored": len(records), "positive": good, "negative": bad}
