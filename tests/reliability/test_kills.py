"""Faults: workers SIGKILLed at random points, in server runs and in pairs with a side channel."""

import functools
import mmap
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import pytest

import pipecore
from pipecore import telemetry
from pipecore.collector import Collector
from tests.conftest import ServerProcess, StartServer
from tests.reliability.conftest import SEED, TERMINAL, Event, Leaks, alive, figure

# 300 kills in all: in runs of the real server, and in in-process pairs with a side channel.
RUN_KILLS = 200
PAIR_KILLS = 100
# Runs going at once: the server's cap (PIPESCOPE_MAX_RUNS) is set to this. A run is done
# once its terminal event is in, so the next one is always admitted.
AT_ONCE = 4
PEER_ERRORS = frozenset({"EOFError", "BrokenPipeError", "OSError"})
# Where a victim can be caught (`kill_point`): the runs must catch one in each.
KILL_POINTS = {"mid-send", "blocked in send", "mid-recv", "blocked in recv", "idle (between calls)"}
SENDS = {"send", "send_bytes"}
RECEIVES = {"recv", "recv_bytes", "recv_bytes_into"}
# How often the API is asked while waiting. Asked every 10 ms (wait_for's pace) by three
# runs at once, the server spent on answering the CPU its runs needed: twice the time.
POLL_SECONDS = 0.05


def calls(events: list[Event], pid: int, phase: str | None = None) -> list[Event]:
    return [
        e
        for e in events
        if e["kind"] == "call" and e["pid"] == pid and (phase is None or e["phase"] == phase)
    ]


def kill_point(events: list[Event], pid: int, killed_at: int) -> str:
    """Where the victim was when the signal left: in which call, and for how long."""
    before = [e for e in calls(events, pid) if e["t"] <= killed_at]
    if not before or before[-1]["phase"] != "begin":
        return "idle (between calls)"
    last = before[-1]
    waited_ms = (killed_at - int(last["t"])) / 1e6
    where = "send" if "send" in str(last["op"]) else "recv"
    return f"blocked in {where}" if waited_ms > 2 else f"mid-{where}"


@dataclass(frozen=True)
class Plan:
    """A run to kill a worker of: its scenario, its sending and receiving workers, the
    victim, and where the victim's peer prints the error the kill gives it."""

    scenario: str
    params: dict[str, Any]
    producer: str
    consumer: str
    victim: str
    # The errors the kill may give the peer.
    errors: frozenset[str]
    # The peer's printed line naming its error starts with this and the error's name:
    # "" for the last line of a traceback, or the peer's own words when it catches it.
    said: str
    # The longest random time from both workers' start to the kill.
    longest: float

    @property
    def peer(self) -> str:
        return self.consumer if self.victim == self.producer else self.producer


def backpressure_plan(rng: random.Random) -> Plan:
    """A producer that fills the pipe and a consumer that pauses after each frame: the
    producer is mostly blocked in send, the consumer mostly between calls. Either dies."""
    size = rng.choice([64, 4096, 16384, 100_000])
    # A killed producer leaves a full pipe that the consumer drains at its own pace.
    delay = 0.002 if size == 64 else rng.choice([0.001, 0.005, 0.02])
    # Both should still be working at the kill. The consumer pauses at least `delay` per
    # message; the producer is done once the unread rest fits in the 64 KiB pipe, which
    # for 64-byte frames (84 bytes on the wire) takes at least 1000 - 780 = 220 pauses,
    # 0.44 s.
    return Plan(
        "backpressure",
        {"messages": 1000, "size": size, "delay": delay},
        "producer",
        "consumer",
        victim=rng.choice(["producer", "consumer"]),
        errors=PEER_ERRORS,
        said="",
        longest=0.3 if size == 64 else 0.25,
    )


def slow_writer_plan(rng: random.Random) -> Plan:
    """`custom`'s pair with a writer paced by its rate and a reader that waits for each
    frame in recv_bytes: the reader dies, mostly blocked in recv, at times just inside
    the call. (Its writer is not the victim: main holds the writing end too and would
    end the reader's wait with its end-of-work frame, not an EOFError.)"""
    duplex = rng.choice([True, False])
    params = {
        "topology": "pair",
        "duplex": duplex,
        "size": rng.choice([16, 1024, 16384]),
        "rate": rng.choice([50.0, 100.0, 200.0]),
        "count": 1000,
        "writers": 1,
        "readers": 1,
        "lock": False,
    }
    # A duplex pipe is a socketpair. A reader that dies with bytes unread sets ECONNRESET on
    # the writer's socket, and a send already under way then fails with that (seen once in
    # some 300 kills) instead of BrokenPipeError.
    errors = frozenset(
        {"BrokenPipeError", "ConnectionResetError"} if duplex else {"BrokenPipeError"}
    )
    # The writer catches the error and prints it: "writer 0: BrokenPipeError: ...".
    return Plan("custom", params, "writer-0", "reader-0", "reader-0", errors, "writer 0: ", 0.25)


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Ask `predicate` every POLL_SECONDS until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s"
        time.sleep(POLL_SECONDS)


@dataclass
class ServerRun:
    """A run of the server, seen only through its REST API."""

    client: httpx.Client
    id: str
    events: list[Event] = field(default_factory=list)

    @classmethod
    def start(cls, client: httpx.Client, scenario: str, params: dict[str, Any]) -> "ServerRun":
        response = client.post("/api/runs", json={"scenario": scenario, "params": params})
        assert response.status_code == 201, response.text
        return cls(client, response.json()["id"])

    def read(self) -> list[Event]:
        """The events published since the last read, after those read before."""
        after = int(self.events[-1]["seq"]) if self.events else 0
        response = self.client.get(f"/api/runs/{self.id}/events", params={"after": after})
        assert response.status_code == 200, response.text
        self.events += response.json()
        return self.events

    def starts(self) -> dict[str, Event]:
        """Process name -> its `process` start event, of the events read so far."""
        return {
            str(e["process"]): e
            for e in self.events
            if e["kind"] == "process" and e.get("op") == "start"
        }

    def started(self, *names: str) -> bool:
        self.read()
        return set(names) <= set(self.starts())

    def ended(self) -> bool:
        """Whether the run's terminal state, always its last event, is in."""
        last = self.read()[-1:]
        return bool(last) and last[0]["kind"] == "run" and last[0]["state"] in TERMINAL

    def finish(self, timeout: float = 60.0) -> tuple[dict[str, Any], list[Event]]:
        """Wait for the run's end; its detail, and all its events read again (a receive
        read before its send came in gets its `match` later)."""
        poll(self.ended, timeout, f"run {self.id} ended")
        detail = self.client.get(f"/api/runs/{self.id}")
        assert detail.status_code == 200, detail.text
        self.events = []
        return detail.json(), self.read()


def ancestors(pid: int) -> set[int]:
    """The pids above `pid`, from /proc, up to init."""
    found: set[int] = set()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            break
        pid = int(stat.rsplit(b")", 1)[1].split()[1])
        found.add(pid)
    return found


def kill_worker(pid: int, server_pid: int) -> int | None:
    """SIGKILL `pid`, a worker of a run of the server `server_pid`; when the signal left,
    or None if the worker had exited. The pid is held by a pidfd while it is checked: one
    freed by an exited worker can be another process's by now, which must not be touched."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        if not (alive(pid) and server_pid in ancestors(pid)):
            return None
        killed_at = time.monotonic_ns()
        signal.pidfd_send_signal(handle, signal.SIGKILL)
        return killed_at
    finally:
        os.close(handle)


@dataclass
class Killed:
    """One kill: the runs it took (the victim may have exited before a kill: then again),
    where the victim was, and the events lost."""

    runs: list[ServerRun]
    victim: str
    point: str
    lost: int


def kill_one_run(server: ServerProcess, plan: Plan, rng: random.Random) -> Killed:
    """Start the planned run through the API, SIGKILL its victim at a random moment, and
    check what the API then tells of the run."""
    runs: list[ServerRun] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _attempt in range(5):
            run = ServerRun.start(client, plan.scenario, plan.params)
            runs.append(run)
            poll(
                functools.partial(run.started, plan.producer, plan.consumer), 30, "workers started"
            )
            starts = run.starts()
            pids = {name: int(event["pid"]) for name, event in starts.items()}
            # The pause counts from when both had started (their events' `t`, this clock),
            # not from when the API showed them: on a loaded machine that can be late.
            began = max(int(starts[name]["t"]) for name in (plan.producer, plan.consumer))
            due = began + int(rng.uniform(0, plan.longest) * 1e9)
            time.sleep(max(0, due - time.monotonic_ns()) / 1e9)
            killed_at = kill_worker(pids[plan.victim], server.process.pid)
            if killed_at is not None:
                break
            # On a loaded machine the start events can reach us so late that the victim
            # has finished and exited: no kill happened, so this run proves nothing. Again.
            run.finish()
        else:
            raise AssertionError(f"the {plan.victim} had always exited before the kill: {plan}")
        detail, events = run.finish()
    where = f"{run.id} {plan.scenario} {plan.params} killing {plan.victim}"
    victim, peer = pids[plan.victim], pids[plan.peer]
    # The main process carries on (or fails) without the victim: the run was killed.
    assert detail["state"] == "killed", f"{where}: {detail['state']} {detail['message']}"

    verdicts = [v["message"] for v in detail["verdicts"] if v["verdict"] == "killed"]
    # The collector is not the victim's parent: it sees the process vanish, not the signal.
    named = f"{plan.victim} (pid {victim}) was killed"
    assert any(message.startswith(named) for message in verdicts), f"{where}: {verdicts}"
    assert detail["message"].startswith(named), f"{where}: {detail['message']}"
    why = detail["reason"]
    assert why["key"] == "worker_killed", f"{where}: {why}"
    assert (why["args"]["process"], why["args"]["pid"]) == (plan.victim, victim), where
    # The peer's error, as an error event and as the line it printed.
    errors = [e["error_type"] for e in calls(events, peer, "error")]
    # On a loaded machine the peer may have done all its work before the kill (the
    # producer's last frame in the pipe, or the consumer past the end marker): it closed
    # its end normally and has nothing to report.
    peer_done = any(e["op"] == "close" for e in calls(events, peer, "end"))
    if not (peer_done and not errors):
        assert errors and errors[-1] in plan.errors, f"{where}: peer errors {errors}"
        printed = [e["text"] for e in events if e["kind"] == "output" and e["pid"] == peer]
        named_error = plan.said + errors[-1]
        shown = [t for t in printed if t == named_error or t.startswith(f"{named_error}:")]
        assert shown, f"{where}: {printed[-3:]}"

    lost = 0
    for pid in pids.values():
        pseqs = [e["pseq"] for e in events if e["pid"] == pid and "pseq" in e]
        assert pseqs == list(range(1, len(pseqs) + 1)), f"{where}: a gap in pid {pid}'s events"
    producer, consumer = pids[plan.producer], pids[plan.consumer]
    sent = [e for e in calls(events, producer, "end") if e["op"] in SENDS]
    received = [e for e in calls(events, consumer, "end") if e["op"] in RECEIVES]
    if plan.victim == plan.producer:
        # Every frame whose send returned is in the pipe, and the consumer drains the pipe
        # before its EOFError: so receives count every returned send, plus at most the
        # one the kill caught between its write and its `end`.
        in_flight = 1 if calls(events, producer)[-1]["phase"] == "begin" else 0
        lost = max(0, len(received) - len(sent) - in_flight)
        assert 0 <= len(received) - len(sent) <= in_flight, (
            f"{where}: {len(received)} frames received, {len(sent)} sends recorded"
        )
    else:
        # Every recorded receive was of a recorded send, matched FIFO.
        assert len(received) <= len(sent), where
        assert all("match" in e for e in received), where
    return Killed(runs, plan.victim, kill_point(events, victim, killed_at), lost)


# 200 runs take 55-100 s on two cores (about 0.5 CPU-second each, to start a run's
# processes); a loaded machine needs more than the suite's 120 s.
@pytest.mark.timeout(400)
def test_sigkill_of_a_worker_at_random_points_loses_no_returned_call(
    start_server: StartServer, leaks: Leaks
) -> None:
    rng = random.Random(SEED)
    seeds = [rng.randrange(1 << 30) for _ in range(RUN_KILLS)]
    server = start_server({"PIPESCOPE_MAX_RUNS": str(AT_ONCE)})
    started = time.monotonic()

    def kill(number: int) -> Killed:
        # A third of the runs for the reader waiting in recv, which back-pressure lacks.
        run_rng = random.Random(seeds[number])
        plan = (slow_writer_plan if number % 3 == 2 else backpressure_plan)(run_rng)
        return kill_one_run(server, plan, run_rng)

    with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
        results = list(pool.map(kill, range(RUN_KILLS)))
    seconds = time.monotonic() - started
    # The server is still up: it answers, and starts and completes a run.
    assert server.process.poll() is None, server.log()[-2000:]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        listed = client.get("/api/scenarios")
        assert listed.status_code == 200 and "ping-pong" in [s["id"] for s in listed.json()]
        last = ServerRun.start(client, "ping-pong", {})
        detail, _ = last.finish(30)
        assert detail["state"] == "completed", detail["message"]
    points = Counter(r.point for r in results)
    figure(
        "runs killed",
        f"{len(results)} runs through the server, {AT_ONCE} at once, "
        f"{sum(r.lost for r in results)} events lost, {seconds:.0f} s, seed {SEED} "
        f"({sum(len(r.runs) - 1 for r in results)} started again, the victim gone); "
        f"points {dict(points)}; "
        f"by victim {dict(Counter(f'{r.victim} {r.point}' for r in results))}",
    )
    # Every kind of kill point was caught, and each victim.
    assert set(points) >= KILL_POINTS, points
    assert {r.victim for r in results} == {"producer", "consumer", "reader-0"}
    assert server.stop() == 0, server.log()[-2000:]
    leaks.check([last, *(run for r in results for run in r.runs)])


# -- in-process pairs with a side channel ---------------------------------------------


ROLES = ("producer", "consumer")


def _returned(shared: mmap.mmap, role: str) -> int:
    count: int = struct.unpack_from("q", shared, 8 * ROLES.index(role))[0]
    return count


def _producer(conn: Connection, other: Connection, shared: mmap.mmap, size: int) -> None:
    other.close()  # a forked child inherits both ends: only then does the peer see EOF
    frame = b"p" * size
    done = 0
    while True:
        conn.send_bytes(frame)
        done += 1
        struct.pack_into("q", shared, 0, done)  # only after the call returned


def _consumer(conn: Connection, other: Connection, shared: mmap.mmap, pause: float) -> None:
    other.close()
    done = 0
    while True:
        conn.recv_bytes()
        done += 1
        struct.pack_into("q", shared, 8, done)
        if pause:
            time.sleep(pause)


def _started(shared: mmap.mmap) -> bool:
    return _returned(shared, "producer") > 0


def _exited(events: list[Event], pid: int) -> bool:
    return any(e["kind"] == "process" and e.get("op") == "exit" and e["pid"] == pid for e in events)


def _drain_until(
    collector: Collector, events: list[Event], done: Callable[[], bool], sentinels: list[int]
) -> bool:
    """Drain into `events` until `done()` (at most 10 s), as a run's collector would: a
    worker whose ring is full waits for the collector, so nobody may stop draining while
    the workers run. Paced by the workers' exits, or 5 ms."""
    deadline = time.monotonic() + 10
    while not done():
        if time.monotonic() > deadline:
            return False
        events += collector.drain()
        multiprocessing.connection.wait(sentinels, 0.005)
    return True


# 100 kills one after another: 23-64 s here (a peer stuck on its own costs 10 s).
@pytest.mark.timeout(400)
def test_every_call_a_killed_worker_completed_is_recorded(leaks: Leaks) -> None:
    """Each worker counts its returned calls in shared memory that outlives it.

    After a SIGKILL at a random moment, the recorded `end` events of the victim must be
    at least that count (and at most one more: a call that returned, was recorded, but
    was killed before the count went up). The collector drains throughout, so the peer
    sees its EOF or broken pipe rather than waiting for room in its ring.
    """
    rng = random.Random(SEED)
    ctx = multiprocessing.get_context("fork")
    lost = stuck = 0
    points: Counter[str] = Counter()
    started = time.monotonic()
    for _ in range(PAIR_KILLS):
        run_dir = tempfile.mkdtemp(prefix=f"pipescope-test-{os.getpid()}-", dir="/dev/shm")
        collector = Collector(run_dir, "rfaults")
        telemetry.activate(run_dir, "rfaults")
        try:
            a, b = pipecore.Pipe(name="side channel")
            # Anonymous shared memory: a fork shares it, and it outlives a killed child.
            shared = mmap.mmap(-1, 16)
            size = rng.choice([16, 4096, 70_000])
            pause = rng.choice([0.0, 0.001])
            workers = {
                "producer": ctx.Process(target=_producer, args=(b, a, shared, size)),
                "consumer": ctx.Process(target=_consumer, args=(a, b, shared, pause)),
            }
            for worker in workers.values():
                worker.start()
            a.close()
            b.close()
            sentinels = [worker.sentinel for worker in workers.values()]
            victim = rng.choice(list(workers))
            events: list[Event] = []
            first = _drain_until(
                collector,
                events,
                functools.partial(_started, shared),
                sentinels,
            )
            assert first, "expected the producer's first send within 10 s"
            kill_at = time.monotonic() + rng.uniform(0, 0.03)
            _drain_until(collector, events, lambda: time.monotonic() >= kill_at, sentinels)  # noqa: B023
            pid = workers[victim].pid or 0
            killed_at = time.monotonic_ns()
            os.kill(pid, signal.SIGKILL)
            _drain_until(
                collector,
                events,
                lambda: not any(w.is_alive() for w in workers.values()),  # noqa: B023
                sentinels,
            )
            for worker in workers.values():
                if worker.is_alive():  # the peer stuck on its own: not under test here
                    stuck += 1
                    worker.kill()
                worker.join(10)
                worker.close()
            _drain_until(collector, events, lambda: _exited(events, pid), [])  # noqa: B023
            events += collector.drain(final=True)
            op = "send_bytes" if victim == "producer" else "recv_bytes"
            recorded = len([e for e in calls(events, pid, "end") if e["op"] == op])
            returned = _returned(shared, victim)
            shared.close()
            lost += max(0, returned - recorded)
            points[f"{victim} {kill_point(events, pid, killed_at)}"] += 1
            assert returned <= recorded <= returned + 1, (
                f"{victim} returned {returned} calls, {recorded} recorded (size {size})"
            )
        finally:
            telemetry.deactivate()
            collector.close()
    assert stuck == 0, f"{stuck} peers of a killed worker were still running 10 s later"
    figure(
        "pairs killed (side channel)",
        f"{PAIR_KILLS} kills, {lost} events lost, {stuck} peers stuck, "
        f"{time.monotonic() - started:.0f} s, "
        f"seed {SEED}; points {dict(points)}",
    )
    leaks.check()
