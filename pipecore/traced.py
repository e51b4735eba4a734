"""TracedConnection: the drop-in multiprocessing.Pipe that records every call."""

import multiprocessing
from multiprocessing.connection import Connection


class TracedConnection(Connection):
    """Placeholder until the traced implementation lands."""


def Pipe(  # noqa: N802 - mirrors multiprocessing.Pipe
    duplex: bool = True, *, name: str | None = None
) -> tuple[Connection, Connection]:
    """Placeholder: the standard Pipe, untraced."""
    return multiprocessing.Pipe(duplex)
