"""RingPace: the lag bound, each ring's window sized from the pace the collector drains at."""

from __future__ import annotations

from pipecore.ring import MIN_WINDOW, POSITION, WINDOW_OFFSET
from pipecore.ringstate import Ring

# With a lag bound: how much work (ns) sizes the windows again.
PACE_NS = 50_000_000


class RingPace:
    """Sizes each ring's window (the unread bytes its writer may leave) to what the
    collector drains in about `lag_ns`, from the bytes it read per nanosecond of work."""

    def __init__(self) -> None:
        self.lag_ns = 0  # 0: each ring's whole data area may be unread
        self._busy_ns = 0  # work counted since the windows were last sized

    def pace(self, busy_ns: int, rings: list[Ring]) -> None:
        """Count `busy_ns` of work on what was read since the last call; every PACE_NS of
        it, size each ring's window from the bytes read per nanosecond of work and the
        ring's share of them."""
        if not self.lag_ns:
            return
        self._busy_ns += busy_ns
        if self._busy_ns < PACE_NS:
            return
        read = {ring.path: ring.read_bytes - ring.paced_bytes for ring in rings}
        total = sum(read.values())
        if total >= MIN_WINDOW:  # enough to tell the pace from the cost of a drain
            drained = total * self.lag_ns / self._busy_ns
            for ring in rings:
                _set_window(ring, int(drained * read[ring.path] / total))
        for ring in rings:
            ring.paced_bytes = ring.read_bytes
        self._busy_ns = 0


def _set_window(ring: Ring, nbytes: int) -> None:
    window = min(max(MIN_WINDOW, nbytes & ~7), ring.capacity)
    POSITION.pack_into(ring.mm, WINDOW_OFFSET, window)
