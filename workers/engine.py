"""What one worker process holds to run steps: its app, state store, agents, dispatcher,
lease keeper, saga and event loop; made once per process, after the fork
(``workers.app.engine_for``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import Celery

from agents.registry import AgentRegistry
from orchestration.flow.dispatch import Dispatcher
from orchestration.state.limiter import Limiter
from orchestration.state.store import StateStore
from workers.aio import EventLoop, event_loop
from workers.events import EventWriter
from workers.leases import LeaseKeeper
from workers.saga import Saga


@dataclass
class Engine:
    app: Celery
    store: StateStore
    registry: AgentRegistry
    lease_seconds: float = 30.0
    max_output_bytes: int = 64 * 2**20
    loop: EventLoop = field(default=event_loop)
    dispatch: Dispatcher = field(init=False)
    leases: LeaseKeeper = field(init=False)
    events: EventWriter = field(init=False)
    limiter: Limiter = field(init=False)
    saga: Saga = field(init=False)

    def __post_init__(self) -> None:
        self.dispatch = Dispatcher(self.app, self.store)
        self.leases = LeaseKeeper(self.store, self.lease_seconds)
        self.events = EventWriter(self.store)
        self.limiter = Limiter(self.store.redis, self.store.prefix)
        self.saga = Saga(self.app, self.store, self.registry)
