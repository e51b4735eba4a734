"""The scenario registry: every program a run may execute, in catalogue order."""

from __future__ import annotations

import importlib

from pipecore.scenarios.catalogue import Param, ParamError, Params, Scenario, shown

# Scenario id -> its module in this package, in catalogue order. A run's main process
# imports only the module it runs (start latency); SCENARIOS imports them all on first use.
MODULES: dict[str, str] = {
    "ping-pong": "pingpong",
    "one-way": "oneway",
    "bytes": "bytes",
    "poll": "poll",
    "backpressure": "backpressure",
    "big-payload": "bigpayload",
    "race": "race",
    "race-locked": "racelocked",
    "lock-queue": "lockqueue",
    "eof": "eof",
    "deadlock": "deadlock",
    "pipeline": "pipeline",
    "fan-in": "fanin",
    "custom": "custom",
    "flood": "flood",
}

SCENARIOS: dict[str, Scenario]  # every registered scenario, built by __getattr__


def _load(module: str) -> Scenario:
    scenario: Scenario = importlib.import_module(f"{__name__}.{module}").SCENARIO
    return scenario


def __getattr__(name: str) -> dict[str, Scenario]:
    if name == "SCENARIOS":
        registry = {scenario_id: _load(module) for scenario_id, module in MODULES.items()}
        globals()["SCENARIOS"] = registry
        return registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_scenario(scenario_id: str) -> Scenario:
    """The registered scenario with this id, or ParamError naming the known ids.

    Before SCENARIOS is first used, only the scenario's own module is imported.
    """
    registry: dict[str, Scenario] | None = globals().get("SCENARIOS")
    found: Scenario | None = None
    if registry is not None:
        found = registry.get(scenario_id)
    elif isinstance(scenario_id, str) and scenario_id in MODULES:
        found = _load(MODULES[scenario_id])
    if found is None:
        known = ", ".join(registry if registry is not None else MODULES)
        raise ParamError("scenario", f"scenario must be one of {known}, got {shown(scenario_id)}")
    return found


__all__ = ["MODULES", "SCENARIOS", "Param", "ParamError", "Params", "Scenario", "get_scenario"]
