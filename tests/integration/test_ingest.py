"""The websocket /ws/ingest: a tracer's run, its checks, refusals and a dropped connection."""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from tests.integration.conftest import MakeClient, wait_for_state

Event = dict[str, Any]


@contextmanager
def tracer(client: TestClient, **headers: str) -> Iterator[WebSocketTestSession]:
    with client.websocket_connect("/ws/ingest", headers=headers) as ws:
        yield ws


def start(ws: WebSocketTestSession, name: object = "prog.py") -> str:
    ws.send_json({"type": "start", "name": name})
    reply = ws.receive_json()
    assert reply["type"] == "started", reply
    run_id: str = reply["run"]["id"]
    return run_id


def event(run_id: str, seq: int, kind: str = "output", **fields: Any) -> Event:
    base: Event = {"run": run_id, "seq": seq, "kind": kind, "t": 1000 + seq, "pid": 42,
                   "process": "MainProcess"}  # fmt: skip
    if kind == "output":
        base.update(stream="stdout", text=f"line {seq}")
    return {**base, **fields}


def refusal(ws: WebSocketTestSession) -> tuple[str, int]:
    """The error frame's message and the close code that follows it."""
    frame = ws.receive_json()
    assert frame["type"] == "error", frame
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return str(frame["message"]), closed.value.code


def test_a_tracer_run_is_listed_recorded_and_ends_with_its_state(client: TestClient) -> None:
    with tracer(client) as ws:
        run_id = start(ws)
        listed = {run["id"]: run for run in client.get("/api/runs").json()}
        assert listed[run_id]["state"] == "starting"
        assert listed[run_id]["title"] == {"en": "prog.py", "zh": "prog.py"}
        first = [event(run_id, 1, "run", state="running"), event(run_id, 2)]
        ws.send_json({"type": "events", "events": first})
        last = event(run_id, 3, "run", state="completed", message="prog.py exited with status 0")
        ws.send_json({"type": "events", "events": [last]})
        ended = ws.receive_json()
    assert ended["type"] == "ended" and ended["run"]["state"] == "completed"
    detail = wait_for_state(client, run_id)
    assert detail["message"] == "prog.py exited with status 0"
    events = client.get(f"/api/runs/{run_id}/events").json()
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[1]["text"] == "line 2"


@pytest.mark.parametrize(
    ("frames", "expected", "code"),
    [
        (["not json"], "frame is not JSON", 1008),
        (["[1]"], "expected a JSON object, got list", 1008),
        (
            ['{"type": "events", "events": []}'],
            "expected a frame of type 'start', got 'events'",
            1008,
        ),
        (['{"type": "start", "name": ""}'], "start: name must be a string of 1 to 120", 1008),
        (['{"type": "start", "name": 7}'], "got 7", 1008),
        (['{"type": "start", "name": "' + "x" * (1024 * 1024) + '"}'], "frame too large", 1009),
        # A name that is not valid Unicode once broke the store's writer for good.
        (['{"type": "start", "name": "x\\ud800"}'], "frame holds a lone surrogate", 1008),
        (['{"type": "start", "name": ' + "[" * 20_000 + "]" * 20_000 + "}"], "nested deeper", 1008),
    ],
)
def test_garbage_before_the_start_is_refused_with_a_reason(
    client: TestClient, frames: list[str], expected: str, code: int
) -> None:
    with tracer(client) as ws:
        for frame in frames:
            ws.send_text(frame)
        message, closed_with = refusal(ws)
    assert expected in message
    assert closed_with == code
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ("many", "expected 'events' to be a list, got str"),
        ([7], "event 0 (seq 1): expected a JSON object, got int"),
        ([{"seq": 1}], "expected 'run' to be"),
        ("wrong seq", "expected 'seq' 1, got 5"),
        ("wrong kind", "expected 'kind' to be one of attach, call, output"),
        ("bad op", "expected 'op' to be one of"),
        ("bad t", "expected 't' to be int, got 'soon'"),
        ("after the end", "event 1 (seq 2): expected nothing after the run's terminal state"),
    ],
)
def test_a_bad_event_is_refused_and_ends_the_run_failed(
    client: TestClient, events: Any, expected: str
) -> None:
    with tracer(client) as ws:
        run_id = start(ws)
        batches = {
            "wrong seq": [event(run_id, 5)],
            "wrong kind": [event(run_id, 1, "dance")],
            "bad op": [event(run_id, 1, "call", pipe="1.1", end="a", op="fly", phase="end")],
            "bad t": [event(run_id, 1, t="soon")],
            "after the end": [event(run_id, 1, "run", state="completed"), event(run_id, 2)],
        }
        sent = batches.get(events, events) if isinstance(events, str) else events
        ws.send_json({"type": "events", "events": sent})
        message, code = refusal(ws)
    assert message.startswith("events: ") and expected in message
    assert code == 1008
    detail = wait_for_state(client, run_id)
    assert detail["state"] == "failed"
    assert detail["message"].startswith("the tracer's stream was refused: events: ")


def test_a_dropped_tracer_ends_its_run_failed(client: TestClient) -> None:
    with tracer(client) as ws:
        run_id = start(ws)
        ws.send_json({"type": "events", "events": [event(run_id, 1, "run", state="running")]})
        deadline = time.monotonic() + 10
        while client.get(f"/api/runs/{run_id}").json()["events"] < 1:
            assert time.monotonic() < deadline, "the first event never arrived"
            time.sleep(0.02)
    detail = wait_for_state(client, run_id)
    assert detail["state"] == "failed"
    assert detail["message"] == "disconnected: the tracer left before the program ended"
    events = client.get(f"/api/runs/{run_id}/events").json()
    assert [(e["seq"], e["state"]) for e in events] == [(1, "running"), (2, "failed")]


def test_tracer_runs_count_against_the_run_cap(make_client: MakeClient) -> None:
    client = make_client(max_runs=1)
    with tracer(client) as first:
        run_id = start(first)
        with tracer(client) as second:
            second.send_json({"type": "start", "name": "other.py"})
            message, code = refusal(second)
        assert message == "concurrent runs: at most 1 may run at once, 1 are running"
        assert code == 1013
        refused = client.post("/api/runs", json={"scenario": "ping-pong"})
        assert refused.status_code == 429
    assert wait_for_state(client, run_id)["state"] == "failed"


def test_a_tracer_run_cannot_be_stopped_or_stepped_from_the_dashboard(client: TestClient) -> None:
    with tracer(client) as ws:
        run_id = start(ws)
        for path, body in (("stop", None), ("step", None), ("step-mode", {"on": True})):
            response = client.post(f"/api/runs/{run_id}/{path}", json=body)
            assert response.status_code == 409, path
            assert "traces a program running elsewhere" in response.json()["detail"]
        with client.websocket_connect("/ws") as viewer:
            assert viewer.receive_json()["type"] == "hello"
            viewer.send_json({"type": "stop", "run": run_id})
            while (frame := viewer.receive_json())["type"] != "error":
                pass
        assert frame["message"].startswith(f"stop: run {run_id!r} traces a program")
        assert client.get(f"/api/runs/{run_id}").json()["state"] == "starting"


def test_ingest_takes_the_token_and_origin_checks_of_the_websocket(
    make_client: MakeClient,
) -> None:
    client = make_client(token="s3cret")
    with pytest.raises(WebSocketDisconnect) as refused, tracer(client):
        pass
    assert refused.value.code == 1008
    with tracer(client, authorization="Bearer s3cret") as ws:
        start(ws)
    with (
        pytest.raises(WebSocketDisconnect),
        tracer(client, authorization="Bearer s3cret", origin="http://evil.example"),
    ):
        pass


def test_the_events_frame_carries_json_the_server_parses_whole(client: TestClient) -> None:
    # A batch in one frame is all or nothing: a bad event refuses the good ones before it.
    with tracer(client) as ws:
        run_id = start(ws)
        ws.send_text(json.dumps({"type": "events", "events": [event(run_id, 1), event(run_id, 9)]}))
        refusal(ws)
    assert client.get(f"/api/runs/{run_id}/events").json()[0]["kind"] == "run"
    assert len(client.get(f"/api/runs/{run_id}/events").json()) == 1
