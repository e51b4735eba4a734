"""The scenario registry: every program a run may execute, in catalogue order."""

from pipecore.scenarios import (
    backpressure,
    bigpayload,
    bytes,
    custom,
    deadlock,
    eof,
    fanin,
    flood,
    lockqueue,
    oneway,
    pingpong,
    pipeline,
    poll,
    race,
    racelocked,
)
from pipecore.scenarios.catalogue import Param, ParamError, Params, Scenario

SCENARIOS: dict[str, Scenario] = {
    module.SCENARIO.id: module.SCENARIO
    for module in (
        pingpong,
        oneway,
        bytes,
        poll,
        backpressure,
        bigpayload,
        race,
        racelocked,
        lockqueue,
        eof,
        deadlock,
        pipeline,
        fanin,
        custom,
        flood,
    )
}


def get_scenario(scenario_id: str) -> Scenario:
    """The registered scenario with this id, or ParamError naming the known ids."""
    try:
        return SCENARIOS[scenario_id]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise ParamError(
            "scenario", f"scenario must be one of {known}, got {scenario_id!r}"
        ) from None


__all__ = ["SCENARIOS", "Param", "ParamError", "Params", "Scenario", "get_scenario"]
