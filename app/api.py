"""The REST API: scenarios, runs and their control, described by pydantic models for OpenAPI."""

import asyncio
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response

from app.models import (
    ErrorBody,
    Health,
    RunDetail,
    RunSummary,
    SafeJSONResponse,
    ScenarioInfo,
    StartRun,
    StepMode,
)
from app.store import Store
from pipecore.export import jsonl_lines, to_chrome_trace
from pipecore.runs import BaseRun, CapacityError, NotControllable, RunManager
from pipecore.scenarios import SCENARIOS
from pipecore.scenarios.catalogue import ParamError, shown

try:
    VERSION = version("pipescope")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"

router = APIRouter()
# ParamError names one of these, or else a scenario parameter.
START_FIELDS = frozenset({"scenario", "params", "start_method", "timeout"})


def _manager(request: Request) -> RunManager:
    manager: RunManager = request.app.state.manager
    return manager


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _run(request: Request, run_id: str) -> BaseRun:
    """A run of this server, to control; a record of an earlier one cannot be."""
    try:
        return _manager(request).get(run_id)
    except KeyError:
        if _store(request).run(run_id) is not None:
            raise HTTPException(
                409, f"run {run_id!r} is a record of an earlier server: it has ended"
            ) from None
        raise HTTPException(404, f"unknown run {run_id!r}") from None


def _control(request: Request, run_id: str, action: Callable[[BaseRun], None]) -> dict[str, Any]:
    run = _run(request, run_id)
    try:
        action(run)
    except NotControllable as exc:
        raise HTTPException(409, str(exc)) from None
    return run.summary()


def all_summaries(manager: RunManager, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This server's runs and the `records` (stored summaries) of others, oldest first."""
    live = [run.summary() for run in manager.list()]
    known = {summary["id"] for summary in live}
    stored = [
        {k: v for k, v in summary.items() if k != "analysis"}
        for summary in records
        if summary["id"] not in known
    ]
    return sorted(stored + live, key=lambda summary: float(summary.get("started") or 0))


RunId = Annotated[str, Path(max_length=64, description="a run id, as POST /api/runs returned it")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {**NOT_FOUND, 409: {"model": ErrorBody}}


@router.get("/healthz", response_model=Health, tags=["health"])
def healthz() -> dict[str, str]:
    """Answers as soon as the server can serve; never needs the token."""
    return {"status": "ok"}


@router.get("/api/scenarios", response_model=list[ScenarioInfo], tags=["scenarios"])
def list_scenarios() -> list[dict[str, Any]]:
    """Every scenario in catalogue order, with both languages' texts, its source and its file."""
    return [
        {**scenario.describe(), "source": scenario.source(), "source_file": scenario.source_file()}
        for scenario in SCENARIOS.values()
    ]


@router.post(
    "/api/runs",
    response_model=RunSummary,
    status_code=201,
    tags=["runs"],
    responses={422: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
async def start_run(request: Request, body: StartRun) -> dict[str, Any]:
    """Start a scenario; 422 names a refused parameter, 429 says the concurrent-run cap."""
    if body.scenario not in SCENARIOS:
        raise HTTPException(
            422, f"unknown scenario {shown(body.scenario)}: expected one of {', '.join(SCENARIOS)}"
        )
    manager = _manager(request)
    try:
        # Starting spawns the run's main process: keep that off the event loop.
        run = await asyncio.to_thread(
            manager.start,
            body.scenario,
            body.params,
            start_method=body.start_method,
            step_mode=body.step_mode,
            timeout=body.timeout,
        )
    except ParamError as exc:
        where = exc.field if exc.field in START_FIELDS else f"params.{exc.field}"
        raise HTTPException(422, f"{where}: {exc.message}") from None
    except CapacityError as exc:
        raise HTTPException(429, str(exc)) from None
    _store(request).record(run)
    request.app.state.hub.watch(run)
    return run.summary()


@router.get("/api/runs", response_model=list[RunSummary], tags=["runs"])
def list_runs(request: Request) -> list[dict[str, Any]]:
    """Every run of this server and the records of earlier ones, oldest first."""
    return all_summaries(_manager(request), _store(request).runs())


@router.get("/api/runs/{run_id}", response_model=RunDetail, tags=["runs"], responses=NOT_FOUND)
def get_run(request: Request, run_id: RunId) -> dict[str, Any]:
    """A run's summary and its analysis: end states, statistics, verdicts."""
    try:
        run = _manager(request).get(run_id)
    except KeyError:
        stored = _store(request).run(run_id)
        if stored is None:
            raise HTTPException(404, f"unknown run {run_id!r}") from None
        return {"analysis": {"ends": {}, "stats": {}, "verdicts": []}, **stored}
    return {**run.summary(), "analysis": run.analysis_snapshot()}


@router.get(
    "/api/runs/{run_id}/events",
    response_model=list[dict[str, Any]],
    tags=["runs"],
    responses=NOT_FOUND,
)
def get_events(
    request: Request,
    run_id: RunId,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="only events with a larger seq")
    ] = 0,
) -> SafeJSONResponse:
    """The run's events in seq order (docs/protocol.md)."""
    events = _events_of(request, run_id, after)
    # Events are already plain JSON: skip re-validating what may be a hundred thousand dicts.
    return SafeJSONResponse(events)


def _events_of(request: Request, run_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The run's events with a seq above `after`."""
    store = _store(request)
    try:
        run = _manager(request).get(run_id)
    except KeyError:
        if store.run(run_id) is None:
            raise HTTPException(404, f"unknown run {run_id!r}") from None
        return list(store.iter_events(run_id, after=after))
    held = run.events()
    # The run holds every event past its first gap: what lies beyond `after` is all here.
    if _complete_after(held, after):
        return [event for event in held if _seq(event) > after]
    # The rest are in the run's record, which has everything published before the flush.
    store.flush()
    stored = list(store.iter_events(run_id, after=after))
    last = _seq(stored[-1]) if stored else after
    return stored + [event for event in held if _seq(event) > last]


def _complete_after(held: list[dict[str, Any]], after: int) -> bool:
    expected = after + 1
    for event in held:
        seq = _seq(event)
        if seq <= after:
            continue
        if seq != expected:
            return False
        expected += 1
    return True


@router.get(
    "/api/runs/{run_id}/export",
    tags=["runs"],
    responses={
        **NOT_FOUND,
        200: {
            "description": "JSON Lines (one event a line) or a Chrome trace-event document",
            "content": {"application/x-ndjson": {}, "application/json": {}},
        },
    },
)
def export_run(
    request: Request,
    run_id: RunId,
    format: Annotated[
        Literal["jsonl", "chrome"],
        Query(description="jsonl: the protocol's events; chrome: opens in Perfetto"),
    ] = "jsonl",
) -> Response:
    """Download a run's events as JSON Lines, or as a Chrome trace with send-to-recv arrows."""
    events = _events_of(request, run_id)
    if format == "chrome":
        name = f"pipescope-{run_id}.trace.json"
        return SafeJSONResponse(
            to_chrome_trace(events),
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return Response(
        b"".join(jsonl_lines(events)),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="pipescope-{run_id}.jsonl"'},
    )


def _seq(event: dict[str, Any]) -> int:
    seq = event.get("seq", 0)
    return seq if isinstance(seq, int) else 0


@router.post(
    "/api/runs/{run_id}/stop", response_model=RunSummary, tags=["runs"], responses=CONTROL_ERRORS
)
def stop_run(request: Request, run_id: RunId) -> dict[str, Any]:
    """Stop a run: its process group gets SIGTERM, then SIGKILL after a grace period.

    Returns at once; the run's state becomes `stopped` when its teardown is done.
    """
    return _control(request, run_id, lambda run: run.stop())


@router.post(
    "/api/runs/{run_id}/step", response_model=RunSummary, tags=["runs"], responses=CONTROL_ERRORS
)
def step_run(request: Request, run_id: RunId) -> dict[str, Any]:
    """In step mode, let one more traced call through."""
    return _control(request, run_id, lambda run: run.step())


@router.post(
    "/api/runs/{run_id}/step-mode",
    response_model=RunSummary,
    tags=["runs"],
    responses=CONTROL_ERRORS,
)
def set_step_mode(request: Request, run_id: RunId, body: StepMode) -> dict[str, Any]:
    """Hold each traced call until a step (on), or let the run go freely (off)."""
    return _control(request, run_id, lambda run: run.set_step_mode(body.on))
