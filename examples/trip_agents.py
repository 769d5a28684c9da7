# examples/trip_agents.py
from pydantic import BaseModel, ConfigDict

from agents import Agent, Handoff, StepInput


class Airline:
    """Stands in for an airline's booking API: seats handed out in order, per flight."""

    def __init__(self) -> None:
        self.taken: dict[str, list[str]] = {}

    def reserve(self, flight: str) -> str:
        seats = self.taken.setdefault(flight, [])
        seats.append(f"{len(seats) + 1}A")
        return seats[-1]

    def release(self, seat: str) -> None:
        for seats in self.taken.values():
            if seat in seats:
                seats.remove(seat)


airline = Airline()
FARES = {"BA117": 412.50}


def needs_review(seat: dict) -> bool:
    return seat["seat"].startswith("13")  # row 13: a person looks at it


class Seat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flight: str


class Booked(BaseModel):
    flight: str
    seat: str


booking = Agent("booking")
payments = Agent("payments")
reviewer = Agent("reviewer")


@booking.task(params=Seat, output=Booked, compensation="release_seat")
def reserve_seat(step: StepInput[Seat]) -> Booked:
    return Booked(flight=step.parameters.flight, seat=airline.reserve(step.parameters.flight))


@booking.task(params=Seat)
def release_seat(step: StepInput[Seat]) -> dict:
    [reserved] = step.previous_results  # the result being undone
    airline.release(reserved.result["seat"])
    return {"released": reserved.result["seat"]}


@booking.task(params=Seat, reads=lambda p: ["seat"])
def confirm(step: StepInput[Seat]) -> dict | Handoff:
    if needs_review(step.shared_data["seat"]):
        return Handoff(
            agent_id="reviewer",
            task_type="review",
            output_key="review",
            output={"confirmed": False},
        )  # inserted next, at run time
    return {"confirmed": True}


@payments.task(reads=["seat"])
def charge(step: StepInput) -> dict:
    seat = step.require("seat")
    return {"flight": seat["flight"], "seat": seat["seat"], "amount": FARES[seat["flight"]]}


@reviewer.task()
def review(step: StepInput) -> dict:
    return {"approved": not step.require("seat")["seat"].endswith("F")}
