"""Fixtures for the server's integration tests: an in-process app with the real RunManager."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}
MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """Build TestClients over create_app(Settings(**overrides)), closed when the test ends."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(Settings(**{"db": ":memory:", **overrides})))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def wait_for_state(
    client: TestClient, run_id: str, states: set[str] = TERMINAL, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll GET /api/runs/{id} until the run is in one of `states`; return its detail."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        detail: dict[str, Any] = response.json()
        if detail["state"] in states:
            return detail
        assert time.monotonic() < deadline, f"run {run_id} still {detail['state']} after {timeout}s"
        time.sleep(0.05)
