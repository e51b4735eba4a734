"""Workload: one measured pattern of the Pipe benchmarks (what is sent, how big, where)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """One measured pattern: what is sent, how big, where the two processes run."""

    name: str
    pattern: str  # "pingpong" or "stream"
    size: int
    as_bytes: bool
    cpus: tuple[int, int]

    @property
    def label(self) -> str:
        kind = "send_bytes" if self.as_bytes else "send"
        where = "1 CPU" if self.cpus[0] == self.cpus[1] else "2 CPUs"
        return f"{self.pattern} {_size(self.size)} {kind}, {where}"


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n >> 20} MiB"
    if n >= 1 << 10:
        return f"{n >> 10} KiB"
    return f"{n} B"
