"""Runs: start a scenario in its own process group, stream its events, step, stop, tear down."""

# The names every part imports. Each lives in a module of its own: `outcome` (states and
# how a run ends), `baserun` (what every run shows), `scenariorun` (a scenario's
# processes), `externalrun` (a program traced elsewhere), `runmanager` (caps and
# lifecycle), `runprocs` (finding a run's processes), `runmarks` (how a run's processes
# and directory are marked) and `teardown` (ending them).

from pipecore.baserun import LIVE_EVENTS, BaseRun, CapacityError, NotControllable
from pipecore.externalrun import ExternalRun
from pipecore.outcome import Outcome, RunState
from pipecore.reasons import Reason, reason
from pipecore.runmanager import START_METHODS, RunManager
from pipecore.scenariorun import Run

__all__ = [
    "LIVE_EVENTS",
    "START_METHODS",
    "BaseRun",
    "CapacityError",
    "ExternalRun",
    "NotControllable",
    "Outcome",
    "Reason",
    "Run",
    "RunManager",
    "RunState",
    "reason",
]
