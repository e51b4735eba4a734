"""The websocket /ws on a real `pipescope serve`, with a websockets client and the real runs."""

import json
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from app.models import FrameError, parse_client_frame
from tests.conftest import StartServer
from tests.integration.wsclient import (
    TERMINAL,
    extensions_of,
    follow_more,
    receive,
    receive_until,
    start_run,
    viewer,
)


def test_hello_snapshot_then_events_until_the_run_completes(live_server: str) -> None:
    with viewer(live_server) as ws:
        hello = receive(ws)
        assert hello["type"] == "hello"
        assert isinstance(hello["runs"], list) and hello["version"]

        # Step mode holds the run at its first call, so the viewer sees it from the start.
        run_id = start_run(live_server, step_mode=True)
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        snapshot = receive_until(ws, "snapshot")
        assert snapshot["run"]["id"] == run_id
        ws.send(json.dumps({"type": "step_mode", "run": run_id, "on": False}))
        frames, events = follow_more(ws, run_id, list(snapshot["events"]))

    assert [e["state"] for e in events if e["kind"] == "run"][-1] == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    batches = [f["events"] for f in frames if f["type"] == "events"]
    assert batches and all(batch for batch in batches)
    # The stream is causal (a receive follows its send), so a receive is streamed with its
    # `match` and `latency_ns` already set: what the viewer got is the record, field for field.
    assert events == httpx.get(f"{live_server}/api/runs/{run_id}/events").json()
    received = [e for e in events if e["kind"] == "call" and e["op"] == "recv"]
    assert all("match" in e for e in received if e["phase"] == "end")


def test_events_frames_are_binary_utf8_json_and_the_others_text(live_server: str) -> None:
    kinds: dict[str, set[type]] = {}
    with viewer(live_server) as ws:
        # Held at its first call until the viewer has its snapshot: a run that ended before
        # the subscription would send no `events` frame at all.
        run_id = start_run(live_server, step_mode=True)
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        ended = False
        released = False
        while not ended:
            message = ws.recv(timeout=30)
            frame = json.loads(message)
            kinds.setdefault(frame["type"], set()).add(type(message))
            if frame["type"] == "snapshot" and not released:
                ws.send(json.dumps({"type": "step_mode", "run": run_id, "on": False}))
                released = True
            if frame["type"] == "events" and frame["run"] == run_id:
                ended = any(
                    e["kind"] == "run" and e["state"] == "completed" for e in frame["events"]
                )
                # Chinese output arrives as written: the bytes are UTF-8.
                for event in frame["events"]:
                    if event["kind"] == "output" and "收到" in event["text"]:
                        assert "收到".encode() in message
    assert kinds["events"] == {bytes}
    assert kinds["hello"] == kinds["snapshot"] == {str}


def test_runs_frames_announce_a_run_and_its_end(live_server: str) -> None:
    with viewer(live_server) as ws:
        assert receive(ws)["type"] == "hello"
        run_id = start_run(live_server)
        states: list[str] = []
        while not states or states[-1] not in TERMINAL:
            frame = receive_until(ws, "runs")
            states += [run["state"] for run in frame["runs"] if run["id"] == run_id]
    assert states[-1] == "completed"


def test_stop_over_the_websocket_ends_the_run(live_server: str) -> None:
    run_id = start_run(live_server, step_mode=True)
    with viewer(live_server) as ws:
        receive_until(ws, "hello")
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        receive_until(ws, "snapshot")
        ws.send(json.dumps({"type": "stop", "run": run_id}))
        _, events = follow_more(ws, run_id, [])
    assert [e["state"] for e in events if e["kind"] == "run"][-1] == "stopped"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("not json", "frame is not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"type": "dance", "run": "x"}', "expected 'type' to be one of subscribe"),
        ('{"type": "subscribe"}', "subscribe: expected 'run' to be a run id string, got None"),
        ('{"type": "subscribe", "run": 7}', "got 7"),
        ('{"type": "step_mode", "run": "x", "on": "yes"}', "expected 'on' to be true or false"),
        ('{"type": "subscribe", "run": "' + "x" * 70_000 + '"}', "frame too large"),
        ('{"a":' * 10_000 + "1" + "}" * 10_000, "frame is nested deeper than 64 levels"),
        ('{"a":' * 65 + "1" + "}" * 65, "frame is nested deeper than 64 levels"),
        ('{"type": "subscribe", "run": "\\ud800"}', "frame holds a lone surrogate"),
        ('{"type": "step_mode", "run": "x", "on": NaN}', "frame holds NaN"),
    ],
)
def test_frame_checks_name_the_problem(sent: str, expected: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(sent, max_bytes=64 * 1024)
    assert expected in str(caught.value)


def test_malformed_frames_get_error_frames_and_the_connection_stays_usable(
    live_server: str,
) -> None:
    run_id = start_run(live_server)
    with viewer(live_server) as ws:
        receive_until(ws, "hello")
        bad: list[str | bytes] = [
            "not json",
            '{"type": "dance", "run": "x"}',
            '{"type": "subscribe", "run": "no-such-run"}',
            '{"type": "subscribe", "run": "' + "x" * 70_000 + '"}',
            b"\x00\x01",
            '{"a":' * 10_000 + "1" + "}" * 10_000,  # 60 KB: within the size limit
            '{"type": "subscribe", "run": "\\ud800"}',
        ]
        messages = []
        for frame in bad:
            ws.send(frame)
            messages.append(receive_until(ws, "error")["message"])
        assert messages[0].startswith("frame is not JSON")
        assert messages[1].startswith("expected 'type' to be one of")
        assert messages[2] == "subscribe: unknown run 'no-such-run'"
        assert messages[3].startswith("frame too large: expected at most 65536 bytes")
        assert messages[4] == "expected a text frame holding JSON, got a binary frame"
        assert messages[5] == "frame is nested deeper than 64 levels"
        assert messages[6].startswith("frame holds a lone surrogate, which is not valid Unicode")

        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        snapshot = receive_until(ws, "snapshot")
        assert snapshot["run"]["id"] == run_id


def test_a_foreign_origin_is_refused_and_the_own_origin_accepted(live_server: str) -> None:
    with pytest.raises(InvalidStatus) as caught, viewer(live_server, origin="http://evil.example"):
        pass
    assert caught.value.response.status_code == 403
    with viewer(live_server, origin=live_server) as ws:
        assert receive(ws)["type"] == "hello"


def test_allowed_origins_admit_another_site(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_ALLOWED_ORIGINS": "http://localhost:5173"})
    with viewer(server.url, origin="http://localhost:5173") as ws:
        assert receive(ws)["type"] == "hello"


def test_the_token_guards_the_websocket_and_the_api(start_server: StartServer) -> None:
    server = start_server({"PIPESCOPE_TOKEN": "s3cret"})
    with pytest.raises(InvalidStatus) as caught, viewer(server.url):
        pass
    assert caught.value.response.status_code == 403
    with pytest.raises(InvalidStatus), viewer(server.url, "?token=wrong"):
        pass
    with viewer(server.url, "?token=s3cret") as ws:
        assert receive(ws)["type"] == "hello"

    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/api/runs").status_code == 401
    authorised = {"Authorization": "Bearer s3cret"}
    assert httpx.get(f"{server.url}/api/runs", headers=authorised).status_code == 200


def test_a_recorded_run_outlives_a_restart_and_replays(
    start_server: StartServer, tmp_path: Path
) -> None:
    env = {"PIPESCOPE_DB": str(tmp_path / "runs.sqlite3")}
    first = start_server(env)
    run_id = start_run(first.url)
    deadline = time.monotonic() + 60
    while httpx.get(f"{first.url}/api/runs/{run_id}").json()["state"] not in TERMINAL:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    events = httpx.get(f"{first.url}/api/runs/{run_id}/events").json()
    first.stop()

    second = start_server(env)
    listed = {run["id"]: run for run in httpx.get(f"{second.url}/api/runs").json()}
    assert listed[run_id]["state"] == "completed"
    assert listed[run_id]["events"] == len(events)
    detail = httpx.get(f"{second.url}/api/runs/{run_id}").json()
    assert detail["analysis"]["ends"], detail
    assert httpx.get(f"{second.url}/api/runs/{run_id}/events").json() == events
    refused = httpx.post(f"{second.url}/api/runs/{run_id}/stop")
    assert refused.status_code == 409 and "earlier server" in refused.json()["detail"]
    with viewer(second.url) as ws:
        assert run_id in [run["id"] for run in receive_until(ws, "hello")["runs"]]
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        snapshot = receive_until(ws, "snapshot")
    assert snapshot["run"]["state"] == "completed"
    assert snapshot["events"] == events


def test_frames_are_compressed_only_when_the_setting_says_so(
    live_server: str, start_server: StartServer
) -> None:
    with viewer(live_server) as ws:  # the client offers permessage-deflate
        assert extensions_of(ws) == ""
    server = start_server({"PIPESCOPE_WS_COMPRESSION": "true"})
    with viewer(server.url) as ws:
        assert extensions_of(ws).startswith("permessage-deflate")
        assert receive(ws)["type"] == "hello"
