"""Ring: what the collector knows of one process's ring, and the events its definitions make."""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from typing import Any

from pipecore.ring import OPS

Event = dict[str, Any]


@dataclass(slots=True)
class Ring:
    """What the collector knows of one process's ring."""

    pid: int
    path: str
    mm: mmap.mmap
    capacity: int
    read_pos: int = 0
    process: str = ""
    ends: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    sites: dict[int, str] = field(default_factory=dict)
    begun: dict[int, int] = field(default_factory=dict)  # slot -> last begin emitted
    done: dict[int, int] = field(default_factory=dict)  # slot -> last begin completed
    exited: bool = False
    last_t: int = 0
    cut: bool = False  # the last read stopped at its budget, short of the write position
    read_bytes: int = 0  # bytes read since the ring was opened
    paced_bytes: int = 0  # read_bytes when the collector last sized the ring's window
    # (end id, site id, op) -> the fields every call event of that kind shares
    templates: dict[tuple[int, int, int], Event] = field(default_factory=dict)
    # a call record's shared bytes -> its begin and end events but for t and pseq, and
    # its slot key
    kinds: dict[bytes, tuple[Event, Event, int]] = field(default_factory=dict)
    seen: set[bytes] = field(default_factory=set)  # shared bytes of calls seen once
    inode: int = 0  # the ring file's, to tell it from a later process's of the same pid

    def event(self, run_id: str, t: int, pseq: int, kind: str) -> Event:
        """A new event of this ring's process; `t` becomes the ring's latest time."""
        self.last_t = t
        return {
            "kind": kind,
            "run": run_id,
            "t": t,
            "pid": self.pid,
            "process": self.process,
            "pseq": pseq,
        }

    def call(self, run_id: str, t: int, pseq: int, eid: int, site: int, op: int) -> Event:
        """A call event of end `eid`, call site `site` and `op`, from its template."""
        template = self.templates.get((eid, site, op))
        if template is None:
            template = self.template(run_id, eid, site, op)
        event = template.copy()
        event["t"] = t
        event["pseq"] = pseq
        self.last_t = t
        return event

    def template(self, run_id: str, eid: int, site: int, op: int) -> Event:
        """The fields every call event of (end, site, op) shares; kept once complete."""
        template = self.event(run_id, 0, 0, "call")
        ends = self.ends.get(eid)
        pipe, pipe_name, end = ("?", "?", "?") if ends is None else ends
        template["pipe"] = pipe
        template["pipe_name"] = pipe_name
        template["end"] = end
        template["op"] = OPS[op] if op < len(OPS) else str(op)
        site_text = self.sites.get(site)
        if site_text is not None:
            template["site"] = site_text
        if ends is not None and (site_text is not None or site == 0):
            # Ends, sites and the process name are defined before use; only a
            # complete template is kept (a process rename clears them all).
            self.templates[(eid, site, op)] = template
        return template
