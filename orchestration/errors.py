"""One error tree: every Baton failure a caller can catch is a ``BatonError``."""

from __future__ import annotations

from collections.abc import Sequence


class BatonError(Exception):
    """Base class of every error Baton raises on purpose."""


class DefinitionError(BatonError, ValueError):
    """A workflow definition is invalid; nothing was written or enqueued."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"{where}: {what}" if where else what for where, what in self.problems]
        super().__init__("invalid workflow definition:\n  " + "\n  ".join(lines))


class InputTooLarge(DefinitionError):
    """A workflow's parameters are over ``BATON_MAX_INPUT_BYTES`` as JSON; nothing was
    written."""


class UnknownAgent(BatonError, LookupError):
    """No agent with this id is registered."""


class UnknownTaskType(BatonError, LookupError):
    """The agent is registered but declares no task type of this name."""


class AgentModuleError(BatonError, ImportError):
    """A module named to register agents cannot be imported."""


class DuplicateAgent(BatonError):
    """Two agents (or two task types of one agent) were registered under one name."""


class WorkflowNotFound(BatonError, KeyError):
    """No workflow with this id exists in the state store (or it has expired)."""

    def __str__(self) -> str:
        return f"workflow not found: {self.args[0]!r}"


class AmbiguousWorkflowId(BatonError, LookupError):
    """An id prefix that begins more than one workflow's id."""


class WorkflowStateError(BatonError):
    """The requested operation does not apply to the workflow's current status."""


class WorkflowTimeout(BatonError, TimeoutError):
    """``wait`` gave up before the workflow reached a terminal status."""


class StepFailed(BatonError):
    """Raised by a sequential step's task after its failure is committed, to stop the chain."""


class StepError(BatonError):
    """A step's failure that says whether trying again could help.

    A task function raises ``StepError("...", retryable=False)`` to fail its step at once,
    whatever retries the step has left; any other exception is taken as transient and
    retried with backoff as the step allows.
    """

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class AgentOutputError(StepError):
    """An agent returned output that does not match its declared output model (or is not
    JSON); the same input would give it again, so it is not retried."""

    retryable = False


class OutputTooLarge(StepError):
    """A step's output is over ``BATON_MAX_OUTPUT_BYTES``; not retried."""

    retryable = False


class EmitTooLarge(StepError):
    """``step.emit``/``step.progress`` was given a value over the cap (``MAX_EMIT_BYTES``)
    or one that is not JSON; the step may catch it, else it fails (not retried)."""

    retryable = False


class LimitError(BatonError, ValueError):
    """A rate or concurrency limit is malformed, or names no limit that exists."""


class HandoffRefused(StepError):
    """A step handed off to a step that its workflow could not run; not retried."""

    retryable = False

    def __init__(self, where: str, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        found = "; ".join(f"{what} (at {loc})" if loc else what for loc, what in self.problems)
        super().__init__(f"{found}, in the {where}")


def is_retryable(exc: BaseException) -> bool:
    """Transient unless the error says otherwise (``StepError.retryable``)."""
    return not isinstance(exc, StepError) or exc.retryable


class StateStoreError(BatonError):
    """The state store could not be reached or answered unexpectedly."""


class NotReplicated(StateStoreError):
    """A write reached the primary, but fewer replicas acknowledged it than
    ``BATON_MIN_REPLICAS`` within ``BATON_REPLICA_TIMEOUT_MS``: a failover now could lose
    it. It may or may not stand; repeating the call is safe (every write is a
    compare-and-set)."""

    def __init__(self, what: str, acks: int, wanted: int, timeout_ms: int) -> None:
        self.acks, self.wanted = acks, wanted
        super().__init__(
            f"{what} reached the primary but {acks} of {wanted} replicas acknowledged it "
            f"within {timeout_ms} ms, so it may or may not have been applied; "
            "repeating it is safe"
        )


class SignalError(BatonError, ValueError):
    """A signal was refused: an unknown name, a payload that does not fit, a workflow that
    is not waiting for it. Nothing changed."""


class SignalTooLarge(SignalError):
    """A signal's payload is over ``BATON_MAX_INPUT_BYTES`` as JSON; nothing changed."""


class MapInputError(StepError):
    """``over`` did not lead to a list when the map started."""

    retryable = False


class TurnMissed(Exception):
    """A rate-limited call could not start within ``ALLOWANCE`` of its turn (its worker
    was busy): it must not start now, and goes back in line for a new turn."""


class RateLimited(StepError):
    """An API answered 429: retryable, after ``retry_after`` seconds if it said."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, retryable=True)
        self.retry_after = retry_after


class PoolRefused(BatonError):
    """``baton worker`` was given a pool that cannot run its agents."""


class CommandRefused(BatonError):
    """A failure a ``baton`` command names itself: its message, a hint and its exit code
    (2, refused, unless it says otherwise; see ``workers/failures.py``)."""

    def __init__(self, message: str, hint: str = "", code: int = 2) -> None:
        super().__init__(message)
        self.hint, self.code = hint, code


class UpstreamFailed(StepError):
    """A branch's step whose predecessor did not complete: it is skipped, not run."""

    retryable = False

    def __init__(self, upstream: str) -> None:
        super().__init__(f"skipped: upstream step {upstream} did not complete")


class MapItemError(StepError):
    """A map's item did what only a step may (hand off, wait): its item fails."""

    retryable = False
