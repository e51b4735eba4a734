"""The REST API over the real RunManager: scenarios, a ping-pong run, control and error bodies."""

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.testclient import TestClient

from tests.integration.conftest import MakeClient, wait_for_state


def start(client: TestClient, scenario: str = "ping-pong", **body: Any) -> dict[str, Any]:
    response = client.post("/api/runs", json={"scenario": scenario, **body})
    assert response.status_code == 201, response.text
    summary: dict[str, Any] = response.json()
    return summary


def test_scenarios_carry_both_languages_their_parameters_and_source(client: TestClient) -> None:
    response = client.get("/api/scenarios")
    assert response.status_code == 200
    scenarios = {s["id"]: s for s in response.json()}
    ping_pong = scenarios["ping-pong"]
    assert ping_pong["title"]["en"] and ping_pong["title"]["zh"]
    assert ping_pong["teaching"]["en"] and ping_pong["teaching"]["zh"]
    assert "def main(" in ping_pong["source"]
    # The page lights a line only for call sites in this file, named as a `site` names it.
    assert ping_pong["source_file"].endswith("/pipecore/scenarios/pingpong.py")
    with open(ping_pong["source_file"], encoding="utf-8") as source:
        assert source.read() == ping_pong["source"]
    messages = {p["name"]: p for p in scenarios["backpressure"]["params"]}["messages"]
    assert (messages["type"], messages["min"], messages["max"]) == ("int", 1, 1000)


def test_a_ping_pong_run_completes_with_its_events_and_analysis(client: TestClient) -> None:
    summary = start(client)
    assert summary["scenario"] == "ping-pong"
    assert summary["start_method"] == "forkserver"  # the default: the server is multi-threaded
    assert summary["state"] in {"starting", "running", "completed"}

    detail = wait_for_state(client, summary["id"])
    assert detail["state"] == "completed", detail["message"]
    assert detail["ended"] >= detail["started"]
    assert set(detail["analysis"]) >= {"ends", "stats", "verdicts"}

    events = client.get(f"/api/runs/{summary['id']}/events").json()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert detail["events"] == len(events)
    printed = [e["text"] for e in events if e["kind"] == "output"]
    assert any("收到 proc1" in line for line in printed), printed
    assert any("收到 proc2" in line for line in printed), printed
    received = [
        e for e in events if e["kind"] == "call" and e["op"] == "recv" and e["phase"] == "end"
    ]
    assert sorted(e["preview"] for e in received) == ["'proc1'", "'proc2'"]

    later = client.get(f"/api/runs/{summary['id']}/events", params={"after": 3}).json()
    assert later == events[3:]
    assert summary["id"] in [run["id"] for run in client.get("/api/runs").json()]


def test_a_refused_parameter_is_named_with_its_bound(client: TestClient) -> None:
    response = client.post(
        "/api/runs", json={"scenario": "backpressure", "params": {"messages": 5000}}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("params.messages: ")
    assert "1000" in detail and "5000" in detail


def test_an_unknown_parameter_is_refused(client: TestClient) -> None:
    response = client.post("/api/runs", json={"scenario": "ping-pong", "params": {"rounds": 3}})
    assert response.status_code == 422
    assert "rounds" in response.json()["detail"]


def test_an_unknown_scenario_lists_the_known_ones(client: TestClient) -> None:
    response = client.post("/api/runs", json={"scenario": "ping-ping"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("unknown scenario 'ping-ping': expected one of ")
    assert "ping-pong" in detail


def test_a_malformed_body_gets_one_readable_sentence(client: TestClient) -> None:
    response = client.post("/api/runs", json={"scenario": "ping-pong", "start_method": "vfork"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert detail.startswith("start_method: ") and "'vfork'" in detail

    response = client.post(
        "/api/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "body is not JSON: Expecting property name enclosed in double quotes (at character 1)"
    )


def test_a_body_past_the_cap_is_413_read_or_not(client: TestClient) -> None:
    big = json.dumps({"scenario": "x" * (20 * 1024 * 1024)}).encode()
    expected = "request body too large: expected at most 65536 bytes, got "
    response = client.post("/api/runs", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == expected + f"{len(big)} bytes"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    response = client.post(
        "/api/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["detail"] == expected + "more than 65536 bytes"
    assert client.get("/healthz").status_code == 200


def test_what_a_refusal_repeats_of_the_request_is_short(client: TestClient) -> None:
    response = client.post("/api/runs", json={"scenario": "x" * 60_000})
    assert response.status_code == 422
    assert len(response.json()["detail"]) < 2000
    response = client.get("/api/runs/" + "r" * 10_000)
    assert response.status_code == 422
    assert len(response.json()["detail"]) < 400
    response = client.get("/api/runs/nope/events", params={"after": 10**23})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("query.after: Input should be less than or equal")


def test_unknown_run_ids_are_404(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/runs/nope"),
        ("GET", "/api/runs/nope/events"),
        ("POST", "/api/runs/nope/stop"),
        ("POST", "/api/runs/nope/step"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "unknown run 'nope'"}


def test_the_concurrent_run_cap_answers_429_and_stop_frees_it(make_client: MakeClient) -> None:
    client = make_client(max_runs=1)
    # In step mode the run waits at its first call, so it stays in progress.
    first = start(client, step_mode=True)
    response = client.post("/api/runs", json={"scenario": "ping-pong"})
    assert response.status_code == 429
    assert "1" in response.json()["detail"]

    stopped = client.post(f"/api/runs/{first['id']}/stop")
    assert stopped.status_code == 200
    assert wait_for_state(client, first["id"])["state"] == "stopped"
    second = start(client)
    assert wait_for_state(client, second["id"])["state"] == "completed"


def test_step_mode_lets_one_call_through_per_step(client: TestClient) -> None:
    summary = start(client, step_mode=True)
    assert summary["step_mode"] is True
    run_id = summary["id"]

    def calls() -> int:
        events = client.get(f"/api/runs/{run_id}/events").json()
        return sum(1 for e in events if e["kind"] == "call")

    before = calls()
    assert client.post(f"/api/runs/{run_id}/step").status_code == 200
    wait_until(lambda: calls() > before)

    response = client.post(f"/api/runs/{run_id}/step-mode", json={"on": False})
    assert response.status_code == 200 and response.json()["step_mode"] is False
    assert wait_for_state(client, run_id)["state"] == "completed"


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_openapi_describes_the_runs_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/api/scenarios", "/api/runs", "/api/runs/{run_id}", "/healthz"} <= set(schema["paths"])
    assert {"RunSummary", "ScenarioInfo", "StartRun", "ErrorBody"} <= set(
        schema["components"]["schemas"]
    )


def test_the_token_guards_every_request_but_healthz(make_client: MakeClient) -> None:
    client = make_client(token="s3cret")
    assert client.get("/healthz").status_code == 200
    refused = client.get("/api/scenarios")
    assert refused.status_code == 401
    assert "token" in refused.json()["detail"]
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/runs", params={"token": "s3cret"}).status_code == 200


def test_a_state_changing_request_from_a_foreign_origin_is_refused(client: TestClient) -> None:
    response = client.post(
        "/api/runs", json={"scenario": "ping-pong"}, headers={"Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert "http://evil.example" in response.json()["detail"]
    assert client.get("/api/runs").json() == []


def test_static_files_are_served_with_nosniff(client: TestClient) -> None:
    response = client.get("/static/js/main.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_page_carries_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert 'data-ws="/ws"' in response.text and 'data-token=""' in response.text


def test_opening_the_page_with_the_token_lets_its_own_requests_through(
    make_client: MakeClient,
) -> None:
    client = make_client(token="s3cret")
    assert client.get("/").status_code == 401
    page = client.get("/", params={"token": "s3cret"})
    assert page.status_code == 200
    # Handed to the page's scripts for the API and the websocket.
    assert 'data-token="s3cret"' in page.text
    # The page's module imports carry no token: the cookie set with the page admits them.
    assert client.get("/static/js/main.js").status_code == 200
    client.cookies.clear()
    assert client.get("/static/js/main.js").status_code == 401


def test_the_page_escapes_what_it_is_given(make_client: MakeClient) -> None:
    client = make_client(token='a"b<c')
    page = client.get("/", params={"token": 'a"b<c'})
    assert page.status_code == 200
    assert 'data-token="a&#34;b&lt;c"' in page.text


def test_a_run_exports_as_json_lines_and_as_a_chrome_trace(client: TestClient) -> None:
    run_id = start(client)["id"]
    assert wait_for_state(client, run_id)["state"] == "completed"
    events = client.get(f"/api/runs/{run_id}/events").json()

    lines = client.get(f"/api/runs/{run_id}/export")
    assert lines.status_code == 200
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert f"pipescope-{run_id}.jsonl" in lines.headers["content-disposition"]
    assert [json.loads(line) for line in lines.text.splitlines()] == events

    trace = client.get(f"/api/runs/{run_id}/export", params={"format": "chrome"})
    assert trace.status_code == 200
    entries = trace.json()["traceEvents"]
    # A slice per call, and a flow arrow from each send to its recv.
    assert {"X", "s", "f"} <= {entry["ph"] for entry in entries}

    refused = client.get(f"/api/runs/{run_id}/export", params={"format": "csv"})
    assert refused.status_code == 422 and "format" in refused.json()["detail"]


def test_events_of_a_run_holding_only_its_newest_calls_come_whole_from_the_record(
    make_client: MakeClient,
) -> None:
    client = make_client(live_events=1000)
    run_id = client.post("/api/runs", json={"scenario": "flood", "params": {"messages": 1000}})
    run_id = run_id.json()["id"]
    detail = wait_for_state(client, run_id)
    assert detail["state"] == "completed"
    assert detail["events_held"] < detail["events"]
    events = client.get(f"/api/runs/{run_id}/events").json()
    assert [e["seq"] for e in events] == list(range(1, detail["events"] + 1))
    later = client.get(f"/api/runs/{run_id}/events?after=3000").json()
    assert later == events[3000:]
