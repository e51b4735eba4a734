"""Checking events streamed in from a tracer against the protocol: check_batch, EventError."""

from __future__ import annotations

from typing import Any

from pipecore.scenarios.catalogue import shown

Event = dict[str, Any]

# What an ingested event must look like (docs/protocol.md); anything else is refused.
EVENT_KINDS = frozenset({"call", "pipe", "attach", "output", "process", "thread", "verdict", "run"})
CALL_OPS = frozenset(
    {"send", "recv", "send_bytes", "recv_bytes", "recv_bytes_into", "poll", "close"}
)
CALL_PHASES = frozenset({"begin", "end", "error"})
RUN_STATES = frozenset(
    {"starting", "running", "completed", "failed", "stopped", "timeout", "deadlock", "killed"}
)
TERMINAL_STATES = RUN_STATES - {"starting", "running"}
MAX_BATCH_EVENTS = 10_000
MAX_REASON_KEY = 40
MAX_REASON_ARGS = 16
MAX_CYCLE = 1024  # waits a deadlock names
# Fields an event of each kind may carry, and their types (docs/protocol.md): checked when
# present, so the analysis and the page never meet a pipe id that is a list or a count that
# is a string. None is allowed only where the protocol says null.
_OPTIONAL: dict[str, dict[str, type | tuple[type, ...]]] = {
    "call": {
        "pipe_name": str, "nbytes": int, "hash": str, "preview": str, "type": str,
        "head": str, "queued": int, "site": str, "result": bool, "error_type": str,
        "error": str, "match": int, "latency_ns": int, "corrupt": str,
        "timeout": (int, float, type(None)), "capacity": int,
    },
    "pipe": {"pipe_name": str, "duplex": bool, "transport": str, "capacity": int, "site": str},
    "attach": {"pipe_name": str},
    "thread": {"threads": int, "helpers": int},
    "process": {"exitcode": (int, type(None)), "parent": int, "killed": bool},
    "verdict": {"pipe": str, "end": str, "events": list},
    "run": {"message": str},
}  # fmt: skip
# Fields an event of each kind must carry: a type, or the strings it may be.
_REQUIRED: dict[str, dict[str, frozenset[str] | type]] = {
    "call": {"pipe": str, "end": frozenset({"a", "b"}), "op": CALL_OPS, "phase": CALL_PHASES},
    "pipe": {"pipe": str},
    "attach": {"pipe": str, "end": frozenset({"a", "b"})},
    "thread": {"op": frozenset({"start", "end"})},
    "process": {"op": frozenset({"start", "exit"})},
    "output": {"stream": frozenset({"stdout", "stderr"}), "text": str},
    "verdict": {"verdict": str, "message": str},
    "run": {"state": RUN_STATES},
}


class EventError(ValueError):
    """An ingested event does not follow the protocol; the message names field and value."""


def _typed(
    event: Event, where: str, field: str, kind: type | tuple[type, ...], *, required: bool = False
) -> Any:
    """`field` of `kind`, when present or `required` (an int is never a bool, a bool only a
    bool); its value."""
    if not required and field not in event:
        return None
    value = event.get(field)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise EventError(f"{where}: expected {field!r} to be {names}, got {shown(value)}")
    return value


def _require(event: Event, where: str, field: str, kind: type | tuple[type, ...]) -> Any:
    return _typed(event, where, field, kind, required=True)


def _choice(event: Event, where: str, field: str, allowed: frozenset[str]) -> None:
    value = event.get(field)
    if not isinstance(value, str) or value not in allowed:  # a list or an object is unhashable
        raise EventError(
            f"{where}: expected {field!r} to be one of {', '.join(sorted(allowed))}, "
            f"got {shown(value)}"
        )


def _check_reason(reason: object, where: str) -> None:
    """A run outcome's reason: {"key": str, "args": {str: str | int | float}}."""
    if not isinstance(reason, dict) or set(reason) != {"key", "args"}:
        raise EventError(
            f"{where}: expected 'reason' to be an object with 'key' and 'args', got {shown(reason)}"
        )
    key, args = reason["key"], reason["args"]
    if not isinstance(key, str) or not 0 < len(key) <= MAX_REASON_KEY:
        raise EventError(
            f"{where}: expected 'reason.key' to be a string of 1 to {MAX_REASON_KEY} "
            f"characters, got {shown(key)}"
        )
    if not isinstance(args, dict) or len(args) > MAX_REASON_ARGS:
        raise EventError(
            f"{where}: expected 'reason.args' to be an object of at most {MAX_REASON_ARGS} "
            f"fields, got {shown(args)}"
        )
    for name, value in args.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise EventError(
                f"{where}: expected 'reason.args.{name}' to be a string or a number, "
                f"got {shown(value)}"
            )


def _check_cycle(cycle: object, where: str) -> None:
    """A deadlock verdict's `cycle`: who waits where, a pid (int) and names (strings)."""
    if not isinstance(cycle, list) or len(cycle) > MAX_CYCLE:
        raise EventError(
            f"{where}: expected 'cycle' to be a list of at most {MAX_CYCLE} waits, "
            f"got {shown(cycle)}"
        )
    for at, wait in enumerate(cycle):
        inside = f"{where}, cycle[{at}]"
        if not isinstance(wait, dict):
            raise EventError(f"{inside}: expected an object, got {type(wait).__name__}")
        if _require(wait, inside, "pid", int) < 0:
            raise EventError(f"{inside}: expected 'pid' to be 0 or more, got {wait['pid']}")
        for field in ("process", "pipe", "end", "op"):
            _require(wait, inside, field, str)
        _typed(wait, inside, "pipe_name", str)


def check_batch(batch: object, run_id: str, first_seq: int) -> list[Event]:
    """Check a batch of events streamed in for run `run_id`; return it, or raise EventError.

    Every event carries the protocol's common fields, belongs to this run, and numbers on
    from `first_seq` without a gap; nothing may follow a terminal `run` event.
    """
    if not isinstance(batch, list):
        raise EventError(f"expected 'events' to be a list, got {type(batch).__name__}")
    if len(batch) > MAX_BATCH_EVENTS:
        raise EventError(f"expected at most {MAX_BATCH_EVENTS} events a frame, got {len(batch)}")
    events: list[Event] = []
    for index, event in enumerate(batch):
        seq = first_seq + index
        where = f"event {index} (seq {seq})"
        if not isinstance(event, dict):
            raise EventError(f"{where}: expected a JSON object, got {type(event).__name__}")
        if events and events[-1]["kind"] == "run" and events[-1]["state"] in TERMINAL_STATES:
            raise EventError(f"{where}: expected nothing after the run's terminal state")
        if event.get("run") != run_id:
            raise EventError(
                f"{where}: expected 'run' to be {run_id!r}, got {shown(event.get('run'))}"
            )
        if _require(event, where, "seq", int) != seq:
            raise EventError(f"{where}: expected 'seq' {seq}, got {shown(event['seq'])}")
        _choice(event, where, "kind", EVENT_KINDS)
        _require(event, where, "t", int)
        if _require(event, where, "pid", int) < 0:
            raise EventError(f"{where}: expected 'pid' to be 0 or more, got {event['pid']}")
        _require(event, where, "process", str)
        kind = event["kind"]
        _typed(event, where, "pseq", int)
        for field, wanted in _REQUIRED.get(kind, {}).items():
            if isinstance(wanted, frozenset):
                _choice(event, where, field, wanted)
            else:
                _require(event, where, field, wanted)
        for field, types in _OPTIONAL.get(kind, {}).items():
            _typed(event, where, field, types)
        if kind == "run" and "reason" in event:
            _check_reason(event["reason"], where)
        elif kind == "verdict" and "cycle" in event:
            _check_cycle(event["cycle"], where)
        events.append(event)
    return events
