"""PipeScope's core: a traced multiprocessing.Pipe, its telemetry, analysis and runs."""

from pipecore.traced import Pipe, TracedConnection

__all__ = ["Pipe", "TracedConnection"]
