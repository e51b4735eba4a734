"""Bad input: malformed websocket frames and floods, a fuzzed OpenAPI, refused parameters."""

import contextlib
import itertools
import json
import random
import re
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import serve_pipescope
from tests.reliability.conftest import SEED, figure

FLOOD_FRAMES = 2000
RATE_NOTICE = (
    "rate limit: more than 100 messages a second from this connection; the ones past it are ignored"
)
FUZZ_EXAMPLES = 30


def ws_connect(base: str) -> ClientConnection:
    return connect(base.replace("http://", "ws://", 1) + "/ws", open_timeout=10, max_size=None)


def next_of(ws: ClientConnection, wanted: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=30))
        if frame["type"] == wanted:
            return frame


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (
            '{"type": "subscribe", "run": 7}',
            "subscribe: expected 'run' to be a run id string, got 7",
        ),
        ('{"type": "subscribe"}', "subscribe: expected 'run' to be a run id string, got None"),
        ('{"type": "stop", "run": ""}', "stop: expected 'run' to be a run id string, got ''"),
        (
            '{"type": "step_mode", "run": "r1", "on": "yes"}',
            "step_mode: expected 'on' to be true or false, got 'yes'",
        ),
        (
            '{"type": "explode", "run": "r1"}',
            "expected 'type' to be one of subscribe, unsubscribe, step, step_mode, stop, thin; "
            "got 'explode'",
        ),
        ('{"type": ["subscribe"]}', "expected 'type' to be one of"),
        ('"subscribe"', "expected a JSON object, got str"),
        ("null", "expected a JSON object, got NoneType"),
        ('{"type": "subscribe", "run": "r1"', "frame is not JSON"),
        ("\ud7ff" * 30_000, "frame too large: expected at most 65536 bytes, got 90000"),
        # A long value is named by its first 80 characters, not repeated whole.
        (
            json.dumps({"type": "subscribe", "run": "r" * 5000}),
            f"subscribe: unknown run '{'r' * 78}…",
        ),
        (
            json.dumps({"type": "thin", "run": "r1", "keep": "k" * 5000}),
            f"thin: expected 'keep' to be null or an integer from 1 to 10000, got '{'k' * 78}…",
        ),
        (json.dumps({"type": "x" * 5000, "run": "r1"}), "expected 'type' to be one of"),
    ],
)
def test_a_bad_frame_gets_an_error_naming_the_problem(
    live_server: str, sent: str, expected: str
) -> None:
    with ws_connect(live_server) as ws:
        next_of(ws, "hello")
        ws.send(sent)
        error = next_of(ws, "error")
        assert error["message"].startswith(expected), error
        assert len(error["message"]) <= 200, error  # a message, not an echo of the frame
        # The same connection still answers.
        ws.send(json.dumps({"type": "subscribe", "run": "r-none"}))
        assert next_of(ws, "error")["message"] == "subscribe: unknown run 'r-none'"


def test_a_flood_of_control_frames_is_limited_in_rate_and_accounted_for(live_server: str) -> None:
    """Past `max_frames_per_second` (100) the server ignores a viewer's frames, says so,
    and then says how many it ignored: every frame sent is either answered or counted."""
    kinds = [
        "not json",
        json.dumps({"type": "stop", "run": "r-none"}),
        json.dumps({"type": "step", "run": "r-none"}),
        json.dumps({"type": "unsubscribe", "run": "r-none"}),
        json.dumps({"type": "nope", "run": "r-none"}),
    ]
    probe = json.dumps({"type": "subscribe", "run": "r-none"})
    answers: Counter[str] = Counter()
    ignored = 0
    with ws_connect(live_server) as ws:
        next_of(ws, "hello")
        for i in range(FLOOD_FRAMES):
            ws.send(kinds[i % len(kinds)])
        # Probe until a probe is answered: the pace has fallen, the connection works.
        probes = 0
        while not answers["subscribe: unknown run 'r-none'"]:
            ws.send(probe)
            probes += 1
            deadline = time.monotonic() + 0.05
            while (left := deadline - time.monotonic()) > 0:
                try:
                    frame = json.loads(ws.recv(timeout=left))
                except TimeoutError:
                    break
                message = frame["message"]
                if counted := re.fullmatch(r"rate limit: ([\d,]+) messages were ignored", message):
                    ignored += int(counted[1].replace(",", ""))
                else:
                    answers[message] += 1
    assert answers[RATE_NOTICE] >= 1
    answered = sum(n for message, n in answers.items() if not message.startswith("rate limit"))
    assert answered >= 100  # the first second's burst
    assert answered + ignored == FLOOD_FRAMES + probes
    assert httpx.get(f"{live_server}/healthz", timeout=10).json() == {"status": "ok"}
    figure(
        "websocket flood",
        f"{FLOOD_FRAMES} bad control frames and {probes} probes -> {answered} answered, "
        f"{ignored} ignored past the rate limit",
    )


# -- parameters ---------------------------------------------------------------------------

REFUSED = [
    ({"scenario": "custom", "params": {"count": -1}}, "params.count: count must be an integer "
     "between 1 and 1000, got -1"),
    ({"scenario": "custom", "params": {"count": 10**30}}, "params.count: count must be an integer "
     "between 1 and 1000, got 1000000000000000000000000000000"),
    ({"scenario": "custom", "params": {"size": 2**21}}, "params.size: size must be an integer "
     "between 1 and 1048576, got 2097152"),
    ({"scenario": "custom", "params": {"rate": -0.5}}, "params.rate: rate must be a number "
     "between 0 and 1000, got -0.5"),
    ({"scenario": "custom", "params": {"rate": "fast"}}, "params.rate: rate must be a number "
     "between 0 and 1000, got 'fast'"),
    ({"scenario": "custom", "params": {"count": 2.5}}, "params.count: count must be an integer "
     "between 1 and 1000, got 2.5"),
    ({"scenario": "custom", "params": {"count": True}}, "params.count: count must be an integer "
     "between 1 and 1000, got True"),
    ({"scenario": "custom", "params": {"lock": "yes"}}, "params.lock: lock must be true or false, "
     "got 'yes'"),
    ({"scenario": "custom", "params": {"topology": "ring"}}, "params.topology: topology must be "
     "one of pair, pipeline, fan-in, got 'ring'"),
    ({"scenario": "custom", "params": {"code": "import os"}}, "params.code: unknown parameter "
     "'code' for custom; expected topology, duplex, size, rate, count, writers, readers, "
     "stages, lock"),
    ({"scenario": "custom", "params": {"writers": 8, "readers": 8}}, "params.writers: a pair with "
     "these parameters needs 16 worker processes; at most 15 are allowed"),
    ({"scenario": "ping-pong", "timeout": -1}, "timeout: timeout must be a number of seconds "
     "above 0 and at most 60, got -1"),
    ({"scenario": "ping-pong", "timeout": 1e9}, "timeout: timeout must be a number of seconds "
     "above 0 and at most 60, got 1000000000.0"),
    ({"scenario": "ping-pong", "params": []}, "params: Input should be a valid dictionary"),
    ({"scenario": 7}, "scenario: Input should be a valid string, got 7"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), REFUSED)
def test_a_refused_parameter_is_named_with_its_bound(
    live_server: str, body: dict[str, Any], expected: str
) -> None:
    response = httpx.post(f"{live_server}/api/runs", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(expected)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(live_server: str, literal: str) -> None:
    body = '{"scenario": "custom", "params": {"rate": ' + literal + "}}"
    response = httpx.post(
        f"{live_server}/api/runs",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("params.rate: rate must be a number between 0 and 1000, got ")


# -- the OpenAPI schema, fuzzed -------------------------------------------------------------

STATUSES: Counter[str] = Counter()


def test_the_fuzzed_api_never_answers_500_and_every_error_has_a_detail() -> None:
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    # Runs the fuzzer manages to start end within a second, so the cap frees itself.
    with serve_pipescope({"PIPESCOPE_MAX_RUN_SECONDS": "1", "PIPESCOPE_MAX_RUNS": "2"}) as server:
        api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in api.get_all_operations() if isinstance(result, Ok)]
        # Half the examples fit the schema, half break it on purpose.
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        for operation, mode in itertools.product(operations, modes):

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=FUZZ_EXAMPLES // len(modes),
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:
                response = case.call(timeout=30)
                statuses[str(response.status_code)] += 1
                where = f"{case.method} {case.formatted_path} -> {response.status_code}"
                if response.status_code >= 500:
                    problems.append(f"{where}: {response.text[:300]}")
                if response.status_code >= 400:
                    try:
                        detail = response.json().get("detail")
                    except ValueError:
                        detail = None
                    if not isinstance(detail, str) or not detail:
                        problems.append(f"{where}: no readable detail in {response.text[:300]}")

            try:
                call()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to break: no parameters
    figure(
        "OpenAPI fuzzing",
        f"{len(operations)} operations, {sum(statuses.values())} requests, statuses "
        f"{dict(sorted(statuses.items()))}, {len(problems)} problems",
    )
    assert operations and sum(statuses.values()) >= len(operations)
    assert problems == []


# -- a tracer's stream with random fields -----------------------------------------------

INGEST_STREAMS = 60
# Values of every JSON type, put into fields of the protocol's events at random.
ODD_VALUES: list[Any] = [
    None, True, -1, 2**80, 1.5, "", "x" * 300, [], [1, "a"], {"a": {"b": []}}, "中文\u202e"
]  # fmt: skip
ODD_FIELDS = [
    "nbytes", "hash", "head", "preview", "type", "queued", "capacity", "site", "match",
    "latency_ns", "corrupt", "pipe_name", "duplex", "transport", "exitcode", "op", "threads",
    "events", "pipe", "end", "error", "error_type", "parent", "state", "stream", "text",
    "cycle", "reason", "kind", "timeout", "result", "pseq", "killed",
]  # fmt: skip


def _odd_stream(rng: random.Random, run: str) -> list[dict[str, Any]]:
    """A run's events as a tracer would send them, but for one field in four of the events
    holding a value of any type."""
    events: list[dict[str, Any]] = []
    for seq in range(1, rng.randint(2, 40)):
        kind = rng.choice(["call", "pipe", "attach", "output", "process", "thread", "verdict"])
        event: dict[str, Any] = {
            "run": run, "seq": seq, "kind": kind, "t": seq * 1000, "pid": rng.choice([1, 2]),
            "process": rng.choice(["a", "b"]), "pipe": "1.1", "end": rng.choice("ab"),
        }  # fmt: skip
        if kind == "call":
            event.update(op=rng.choice(["send", "recv", "poll", "close"]), phase="end")
            event.update(nbytes=rng.randint(0, 9), hash="0badf00d", match=rng.randint(1, 40))
        elif kind == "pipe":
            event.update(pipe_name="p", duplex=rng.random() < 0.5, capacity=65536)
        elif kind == "process":
            event.update(op=rng.choice(["start", "exit"]), exitcode=rng.choice([0, -9, None]))
        elif kind == "thread":
            event.update(op=rng.choice(["start", "end"]), threads=rng.randint(1, 3))
        elif kind == "output":
            event.update(stream="stdout", text="hi")
        elif kind == "verdict":
            event.update(verdict=rng.choice(["eof", "deadlock", "killed"]), message="m")
        if rng.random() < 0.25:
            event[rng.choice(ODD_FIELDS)] = rng.choice(ODD_VALUES)
        events.append(event)
    end = {"run": run, "seq": len(events) + 1, "kind": "run", "t": 10**8, "pid": 0}
    return [*events, {**end, "process": "pipescope", "state": "completed"}]


def test_a_tracer_stream_with_odd_fields_is_taken_or_refused_never_an_internal_error(
    live_server: str,
) -> None:
    """Every stream ends `ended` (taken: its run completes) or is refused with 1008 and a
    message naming the field; none makes the server fail (1011), and it keeps answering."""
    rng = random.Random(SEED)
    url = live_server.replace("http://", "ws://", 1) + "/ws/ingest"
    outcomes: Counter[str] = Counter()
    for n in range(INGEST_STREAMS):
        with connect(url, open_timeout=10, max_size=None) as ws:
            ws.send(json.dumps({"type": "start", "name": f"odd {n}"}))
            run = json.loads(ws.recv(timeout=10))["run"]["id"]
            ws.send(json.dumps({"type": "events", "events": _odd_stream(rng, run)}))
            reply = json.loads(ws.recv(timeout=10))
            with contextlib.suppress(ConnectionClosed):
                ws.recv(timeout=10)
            code = ws.protocol.close_code
        if reply["type"] == "error":
            assert code == 1008, (reply, code)
            assert re.match(
                r"events: event \d+ \(seq \d+\)(, cycle\[\d+\])?: expected", reply["message"]
            )
            outcomes["refused"] += 1
        else:
            assert (reply["type"], reply["run"]["state"], code) == ("ended", "completed", 1000)
            outcomes["taken"] += 1
        assert httpx.get(f"{live_server}/api/runs/{run}", timeout=10).status_code == 200
    assert outcomes["refused"] and outcomes["taken"], outcomes
    figure("odd tracer streams", f"{INGEST_STREAMS} streams, seed {SEED}: {dict(outcomes)}")
