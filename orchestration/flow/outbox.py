"""Task messages sent *with* a state change, not after it (a transactional outbox).

A state change names what goes next (the next step, a group's members, the group's
aggregate) as a :class:`~orchestration.compiler.Next`. Here it becomes an
:class:`~orchestration.scripts.Outgoing`: the task ids, which the script tracks, and,
when the broker is the state store's own Redis, the messages themselves, encoded as
stock Celery would (``orchestration/flow/wire.py``), which the script pushes onto their queues
in the same atomic step (``lua/_outbox.lua``): a handoff is never committed without its
next message, nor sent without its commit. It also spares each step Celery's publish
path (routing lookup, producer, sent event), which cost more than the rest of a no-op
step (docs/benchmarks.md).

On any other broker (RabbitMQ) the same signatures are published through Celery right
after the commit (:meth:`Outbox.published`); a crash between the two is what the reaper
recovers. Celery's publish signals fire for inline messages too, so hooks on them
(tracing, the message-size logs) see every message: ``before_task_publish`` as the
message is built, ``after_task_publish`` once its commit has pushed it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from celery import Celery
from celery.canvas import Signature
from celery.signals import after_task_publish

from orchestration.flow.compiler import Next
from orchestration.flow.wire import Encoder, Sent, decode
from orchestration.state.scripts import Outgoing

BATCH = 100  # a big group's members are sent this many per script


class Outbox:
    def __init__(self, app: Celery) -> None:
        self.encoder = Encoder(app)
        self._built: dict[str, Sent] = {}  # for after_task_publish, once sent

    @property
    def inline(self) -> bool:
        """Whether scripts send the messages (the broker is the state Redis)."""
        return self.encoder.inline

    def outgoing(
        self, nxt: Next, parent_id: str | None = None, first: Sequence[Signature] | None = None
    ) -> Outgoing:
        """``first`` (by default ``nxt``'s first batch) ready for a script to send, a group's
        aggregate with it.

        Of a big group only the first batch goes with the state change; the rest follow
        (:meth:`later_batches`), so that workers start on the first members while the
        others are being encoded.
        """
        out = self.batch(self.first_batch(nxt) if first is None else first, parent_id)
        if nxt.group and nxt.aggregate is not None and not nxt.joins:
            aggregate = self.batch([nxt.aggregate], parent_id)
            out = replace(out, group=nxt.group, aggregate=aggregate)
        return out

    @staticmethod
    def first_batch(nxt: Next) -> list[Signature]:
        return list(nxt.sigs[:BATCH])

    @staticmethod
    def later_batches(nxt: Next) -> Iterator[list[Signature]]:
        """The batches of ``nxt`` after the first."""
        for start in range(BATCH, len(nxt.sigs), BATCH):
            yield nxt.sigs[start : start + BATCH]

    def batch(self, sigs: Sequence[Signature], parent_id: str | None = None) -> Outgoing:
        """Freeze ``sigs`` (their ids are tracked before they exist) and, inline, encode them."""
        ids = [str(sig.freeze().id) for sig in sigs]
        if not self.inline:
            return Outgoing(ids=ids)
        pushes = []
        keep = bool(after_task_publish.receivers)
        if keep and len(self._built) > 10_000:  # built for state changes that were refused
            self._built.clear()
        for sig in sigs:
            sent, sig_pushes = self.encoder.encode(sig, parent_id)
            pushes.extend(sig_pushes)
            if keep:
                self._built[str(sig.id)] = sent
        return Outgoing(ids=ids, pushes=pushes)

    def published(self, sigs: Sequence[Signature]) -> None:
        """After a script took ``sigs``: on another broker, publish them through Celery now;
        inline, tell the publish hooks they went."""
        if not self.inline:
            for sig in sigs:
                sig.apply_async()
            return
        for sig in sigs:
            sent = self._built.pop(str(sig.id), None)
            if sent is not None:
                _announce(sent)

    def announce(self, payload: str) -> None:
        """Tell the publish hooks about a message built elsewhere and sent by a script
        (a group's aggregate, built when the group started)."""
        if after_task_publish.receivers:
            _announce(decode(payload))


def _announce(sent: Sent) -> None:
    after_task_publish.send(
        sender=sent.name, body=sent.body, headers=sent.headers, exchange="",
        routing_key=sent.queue,
    )  # fmt: skip
