"""The server's settings: one table feeding the environment, the CLI help, validation and docs."""

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.setting import Setting, SettingsError

# The settings' users import the table and its errors from here.
__all__ = ["SETTINGS", "Setting", "Settings", "SettingsError"]


def _doc(
    help: str, *, minimum: float | None = None, maximum: float | None = None
) -> dict[str, Any]:
    return {"help": help, "minimum": minimum, "maximum": maximum}


@dataclass(frozen=True)
class Settings:
    """Every setting of the server; each field is one row of the settings table."""

    host: str = field(
        default="127.0.0.1",
        metadata=_doc("address to listen on; 0.0.0.0 listens on every interface"),
    )
    port: int = field(
        default=8000,
        metadata=_doc("TCP port to listen on (0 picks a free port)", minimum=0, maximum=65535),
    )
    token: str | None = field(
        default=None,
        metadata=_doc(
            "when set, every request and the websocket must carry this token "
            "('Authorization: Bearer <token>' or '?token=<token>'); /healthz stays open"
        ),
    )
    db: str | None = field(
        default=None,
        metadata=_doc(
            "SQLite file keeping every run's summary and events, so runs outlive a restart "
            "(default: pipescope/pipescope.sqlite3 under $XDG_DATA_HOME or ~/.local/share; "
            "':memory:' keeps nothing on disk)"
        ),
    )
    allowed_origins: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "comma-separated origins, besides the server's own, allowed to open the "
            "websocket and send requests that change state (e.g. http://localhost:5173)"
        ),
    )
    keep_runs: int = field(
        default=200,
        metadata=_doc(
            "recorded runs kept in the database; past this the oldest are deleted first",
            minimum=1,
        ),
    )
    keep_events: int = field(
        default=2_000_000,
        metadata=_doc(
            "recorded events kept in the database; past this whole runs are deleted, "
            "oldest first (the newest run is always kept)",
            minimum=1000,
        ),
    )
    live_events: int = field(
        default=100_000,
        metadata=_doc(
            "events of one run held in memory for viewers: its run, pipe, process and attach "
            "events and first verdicts, plus the newest this many others (calls, output "
            "lines); the database keeps every event",
            minimum=1000,
            maximum=10_000_000,
        ),
    )
    max_runs: int = field(
        default=4,
        metadata=_doc("runs that may be in progress at once", minimum=1, maximum=64),
    )
    max_processes: int = field(
        default=16,
        metadata=_doc("processes one run may start", minimum=2, maximum=256),
    )
    max_run_seconds: float = field(
        default=60.0,
        metadata=_doc("a run still going after this many seconds is stopped", minimum=1),
    )
    max_message_bytes: int = field(
        default=64 * 1024,
        metadata=_doc(
            "largest websocket message accepted from a viewer; a larger one is answered "
            "with an error frame",
            minimum=256,
            maximum=16 * 1024 * 1024,
        ),
    )
    max_frames_per_second: int = field(
        default=100,
        metadata=_doc(
            "websocket messages a viewer may send a second, in bursts of as many; the ones "
            "past it are ignored, and error frames say so and how many",
            minimum=1,
            maximum=100_000,
        ),
    )
    viewer_backlog: int = field(
        default=20_000,
        metadata=_doc(
            "events that may pile up for a viewer while a frame to it is still being "
            "written; past this it is resynchronised from a snapshot of the newest events",
            minimum=1,
        ),
    )
    viewer_fps: float = field(
        default=30.0,
        metadata=_doc("most 'events' frames sent to one viewer per second", minimum=1, maximum=240),
    )
    ws_compression: bool = field(
        default=False,
        metadata=_doc(
            "compress every websocket frame (permessage-deflate) for viewers that offer it, "
            "each viewer at the cost of its own compression; the page does not need it: "
            "it asks for compressed events frames (/ws?compress=deflate-raw, made once "
            "for all viewers)"
        ),
    )
    spares: int = field(
        default=2,
        metadata=_doc(
            "run main processes, and as many collector processes, kept started ahead of the "
            "next runs so that a run starts at once; each pair holds about 65 MB while idle "
            "(0: every run starts its processes when it starts)",
            minimum=0,
            maximum=8,
        ),
    )
    deadlock_seconds: float = field(
        default=1.0,
        metadata=_doc(
            "every live end blocked, each waiting for another, for this long is reported as a "
            "deadlock",
            minimum=0.05,
        ),
    )

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            setting.check(getattr(self, setting.name))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every PIPESCOPE_* variable of `environ` (default: os.environ).

        Keyword arguments override the environment (the CLI's options use them).
        Raises SettingsError naming the variable, the expected form and the value found.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if setting.env in environ:
                values[setting.name] = setting.parse(environ[setting.env])
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - {s.name for s in SETTINGS})
        if unknown:
            raise SettingsError(f"unknown settings {unknown}")
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """These settings as PIPESCOPE_* variables (so a reloading server reads the same)."""
        env: dict[str, str] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if value is not None:
                env[setting.env] = setting.format(value)
        return env


def _table() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    return tuple(
        Setting(
            name=f.name,
            type=hints[f.name],
            default=f.default,
            help=f.metadata["help"],
            minimum=f.metadata["minimum"],
            maximum=f.metadata["maximum"],
        )
        for f in dataclasses.fields(Settings)
    )


SETTINGS: tuple[Setting, ...] = _table()
