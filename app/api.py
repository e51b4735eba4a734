"""The REST API: scenarios, runs and their control, described by pydantic models for OpenAPI."""

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.store import Store
from pipecore.export import to_chrome_trace, to_jsonl
from pipecore.runs import CapacityError, Run, RunManager
from pipecore.scenarios import SCENARIOS
from pipecore.scenarios.catalogue import ParamError

try:
    VERSION = version("pipescope")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"

router = APIRouter()
# ParamError names one of these, or else a scenario parameter.
START_FIELDS = frozenset({"scenario", "params", "start_method", "timeout"})
# Fields the analysis may add to an event after it was published.
LATE_FIELDS = frozenset({"match", "latency_ns", "corrupt"})


class LocalText(BaseModel):
    """A text in each of the page's languages."""

    en: str
    zh: str


class ParamInfo(BaseModel):
    """One parameter a scenario accepts, with its type and bounds."""

    name: str
    type: Literal["int", "float", "bool", "choice"]
    default: bool | int | float | str
    help: LocalText
    min: float | None = None
    max: float | None = None
    choices: list[str] | None = None


class ScenarioInfo(BaseModel):
    """A scenario of the gallery."""

    id: str
    title: LocalText
    teaching: LocalText
    params: list[ParamInfo]
    source: str = Field(description="the scenario module's source, shown beside the animation")


class StartRun(BaseModel):
    """What to run."""

    scenario: str = Field(examples=["ping-pong"])
    params: dict[str, Any] = Field(
        default_factory=dict, description="parameter values; missing ones take their default"
    )
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    step_mode: bool = Field(False, description="start paused: each step lets one call through")
    timeout: float | None = Field(
        None, description="seconds before the run is stopped; at most the server's limit"
    )


class StepMode(BaseModel):
    """Turn step mode on or off."""

    on: bool


class RunSummary(BaseModel):
    """The protocol's run summary (docs/protocol.md)."""

    model_config = ConfigDict(extra="allow")

    id: str
    scenario: str
    title: LocalText | str
    params: dict[str, Any]
    start_method: str
    state: str
    message: str | None = None
    started: float | None = None
    ended: float | None = None
    step_mode: bool
    verdicts: list[dict[str, Any]] | int
    events: int = Field(description="events recorded so far")


class AnalysisSnapshot(BaseModel):
    """What the analysis concluded so far."""

    model_config = ConfigDict(extra="allow")

    ends: dict[str, dict[str, Any]] = Field(description='"<pipe>/<end>" -> state, queued, ...')
    stats: dict[str, Any]
    verdicts: list[dict[str, Any]]


class RunDetail(RunSummary):
    """A run's summary and its analysis."""

    analysis: AnalysisSnapshot


class ErrorBody(BaseModel):
    """Every error: one sentence saying what was expected and what came instead."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]


def _manager(request: Request) -> RunManager:
    manager: RunManager = request.app.state.manager
    return manager


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _run(request: Request, run_id: str) -> Run:
    """A run of this server, to control; a record of an earlier one cannot be."""
    try:
        return _manager(request).get(run_id)
    except KeyError:
        if _store(request).run(run_id) is not None:
            raise HTTPException(
                409, f"run {run_id!r} is a record of an earlier server: it has ended"
            ) from None
        raise HTTPException(404, f"unknown run {run_id!r}") from None


def record(run: Run, store: Store) -> None:
    """Keep the run's summary and events in the store as they arrive.

    The subscriber runs on the collector thread; the store only queues for its writer.
    """

    def keep(batch: list[dict[str, Any]]) -> None:
        store.append_events(batch)
        if any(event.get("kind") == "run" for event in batch):
            if run.state.terminal:
                # The analysis annotates a receive in place when its send arrives later:
                # write those again so the record holds their final form.
                store.append_events([e for e in run.events() if LATE_FIELDS.intersection(e)])
            store.save_run(_record_of(run))

    so_far, _ = run.subscribe(keep)
    keep(so_far)
    if run.state.terminal:
        # It may have ended before `keep` saw it: make the final summary the last one saved.
        store.save_run(_record_of(run))


def _record_of(run: Run) -> dict[str, Any]:
    summary = run.summary()
    if run.state.terminal:
        summary["analysis"] = run.analysis_snapshot()
    return summary


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


RunId = Annotated[str, Path(description="a run id, as POST /api/runs returned it")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {**NOT_FOUND, 409: {"model": ErrorBody}}


@router.get("/healthz", response_model=Health, tags=["health"])
def healthz() -> dict[str, str]:
    """Answers as soon as the server can serve; never needs the token."""
    return {"status": "ok"}


@router.get("/api/scenarios", response_model=list[ScenarioInfo], tags=["scenarios"])
def list_scenarios() -> list[dict[str, Any]]:
    """Every scenario in catalogue order, with both languages' texts and its source."""
    return [{**scenario.describe(), "source": scenario.source()} for scenario in SCENARIOS.values()]


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
            422, f"unknown scenario {body.scenario!r}: expected one of {', '.join(SCENARIOS)}"
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
    record(run, _store(request))
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
    after: Annotated[int, Query(ge=0, description="only events with a larger seq")] = 0,
) -> JSONResponse:
    """The run's events in seq order (docs/protocol.md)."""
    events = _events_of(request, run_id)
    if after:
        events = [event for event in events if _seq(event) > after]
    # Events are already plain JSON: skip re-validating what may be a hundred thousand dicts.
    return JSONResponse(events)


def _events_of(request: Request, run_id: str) -> list[dict[str, Any]]:
    try:
        return _manager(request).get(run_id).events()
    except KeyError:
        store = _store(request)
        if store.run(run_id) is None:
            raise HTTPException(404, f"unknown run {run_id!r}") from None
        return store.events(run_id)


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
        return JSONResponse(
            to_chrome_trace(events),
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return Response(
        "".join(to_jsonl(events)),
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
    run = _run(request, run_id)
    run.stop()
    return run.summary()


@router.post(
    "/api/runs/{run_id}/step", response_model=RunSummary, tags=["runs"], responses=CONTROL_ERRORS
)
def step_run(request: Request, run_id: RunId) -> dict[str, Any]:
    """In step mode, let one more traced call through."""
    run = _run(request, run_id)
    run.step()
    return run.summary()


@router.post(
    "/api/runs/{run_id}/step-mode",
    response_model=RunSummary,
    tags=["runs"],
    responses=CONTROL_ERRORS,
)
def set_step_mode(request: Request, run_id: RunId, body: StepMode) -> dict[str, Any]:
    """Hold each traced call until a step (on), or let the run go freely (off)."""
    run = _run(request, run_id)
    run.set_step_mode(body.on)
    return run.summary()
