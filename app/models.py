"""The shapes of what clients send and get: REST bodies (pydantic, for OpenAPI), /ws frames."""

from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app import clientjson
from app.clientjson import ClientJSONError
from pipecore.scenarios.catalogue import shown


class SafeJSONResponse(JSONResponse):
    """JSON with <, > and & written as \\u escapes, so echoed input never reads as markup."""

    def render(self, content: Any) -> bytes:
        body = super().render(content)
        return body.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


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
    source_file: str = Field(
        description="the path of that source as the `site` of its events names it "
        "(a call site in another file is not a line of this source)"
    )


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
    """The server answers."""

    status: Literal["ok"]


CLIENT_TYPES = ("subscribe", "unsubscribe", "step", "step_mode", "stop", "thin")
# The most calls and output lines a viewer may ask for per thinned `events` frame.
MAX_THIN_KEEP = 10_000


class FrameError(ValueError):
    """A client frame was malformed; the message says what was expected and what came."""


@dataclass(frozen=True)
class ClientFrame:
    """A well-formed frame from a viewer."""

    type: str
    run: str
    on: bool = False
    # `thin`: calls and output lines wanted per events frame; None asks for every event again.
    keep: int | None = None


def parse_client_frame(text: str, max_bytes: int) -> ClientFrame:
    """Check one text frame from a viewer against the protocol; raise FrameError if it is not."""
    size = len(text.encode())
    if size > max_bytes:
        raise FrameError(f"frame too large: expected at most {max_bytes} bytes, got {size}")
    try:
        data = clientjson.loads(text)
    except ClientJSONError as exc:
        raise FrameError(f"frame {exc}") from None
    if not isinstance(data, dict):
        raise FrameError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise FrameError(
            f"expected 'type' to be one of {', '.join(CLIENT_TYPES)}; got {shown(kind)}"
        )
    run = data.get("run")
    if not isinstance(run, str) or not run:
        raise FrameError(f"{kind}: expected 'run' to be a run id string, got {shown(run)}")
    on = data.get("on")
    if kind == "step_mode":
        if not isinstance(on, bool):
            raise FrameError(f"step_mode: expected 'on' to be true or false, got {shown(on)}")
        return ClientFrame(kind, run, on)
    if kind == "thin":
        return ClientFrame(kind, run, keep=_thin_keep(data))
    return ClientFrame(kind, run)


def _thin_keep(data: dict[str, Any]) -> int | None:
    keep = data.get("keep", ...)
    if keep is None:
        return None
    if isinstance(keep, int) and not isinstance(keep, bool) and 1 <= keep <= MAX_THIN_KEEP:
        return keep
    got = "nothing" if keep is ... else shown(keep)
    raise FrameError(
        f"thin: expected 'keep' to be null or an integer from 1 to {MAX_THIN_KEEP}, got {got}"
    )
