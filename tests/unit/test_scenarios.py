"""The scenario catalogue: registry, descriptions, parameter validation and documentation."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipecore.scenarios import MODULES, SCENARIOS, ParamError, get_scenario

CATALOGUE = [
    "ping-pong",
    "one-way",
    "bytes",
    "poll",
    "backpressure",
    "big-payload",
    "race",
    "race-locked",
    "lock-queue",
    "eof",
    "deadlock",
    "pipeline",
    "fan-in",
    "custom",
    "flood",
]


def test_registry_lists_every_scenario_in_catalogue_order() -> None:
    assert list(SCENARIOS) == CATALOGUE


def test_each_scenario_id_names_the_module_that_defines_it() -> None:
    assert list(MODULES) == list(SCENARIOS)
    for scenario_id, module in MODULES.items():
        assert SCENARIOS[scenario_id].module == f"pipecore.scenarios.{module}"


def test_looking_up_a_scenario_imports_only_its_module() -> None:
    # A run's main process looks its scenario up: the other modules cost start time.
    code = (
        "import sys; from pipecore.scenarios import get_scenario; get_scenario('eof'); "
        "print(sorted(m for m in sys.modules if m.startswith('pipecore.scenarios.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['pipecore.scenarios.catalogue', 'pipecore.scenarios.eof']"


@pytest.mark.parametrize("scenario_id", CATALOGUE)
def test_each_scenario_is_described_in_both_languages_and_shows_its_source(
    scenario_id: str,
) -> None:
    scenario = SCENARIOS[scenario_id]
    for text in (scenario.title, scenario.teaching):
        assert text["en"] and text["zh"]
    source = scenario.source()
    assert "def main(params" in source
    assert f'id="{scenario_id}"' in source
    scenario.validate({})  # the defaults are valid
    assert scenario.processes(scenario.defaults()) + 1 <= 16


def test_validation_names_the_field_the_bound_and_the_bad_value() -> None:
    with pytest.raises(ParamError) as info:
        get_scenario("one-way").validate({"messages": -3})
    assert info.value.field == "messages"
    assert str(info.value) == "messages must be an integer between 1 and 1000, got -3"


@pytest.mark.parametrize(
    ("scenario_id", "raw", "field", "message"),
    [
        (
            "poll",
            {"timeout": math.nan},
            "timeout",
            "timeout must be a number between 0.01 and 5, got nan",
        ),
        ("one-way", {"messages": True}, "messages", "got True"),
        ("one-way", {"messages": 2.0}, "messages", "must be an integer"),
        ("one-way", {"messages": "3"}, "messages", "got '3'"),
        ("one-way", {"colour": 1}, "colour", "unknown parameter 'colour' for one-way"),
        ("deadlock", {"variant": "both"}, "variant", "variant must be one of recv-recv, send-send"),
        ("race", {"two_readers": 1}, "two_readers", "two_readers must be true or false, got 1"),
        ("custom", {"writers": 8, "readers": 8}, "writers", "at most 15 are allowed"),
        (  # the run would end its writers at 40 s, and the run 'killed'
            "custom",
            {"count": 1000, "rate": 20},
            "count",
            "count 1000 at rate 20 a second takes 50 s; a writer may send for at most 30 s: "
            "at most 600 messages at this rate",
        ),
        ("bytes", {"maxlength": 100, "long_size": 50}, "long_size", "greater than maxlength"),
        ("pipeline", {"pace": 0.6}, "pace", "pace must be a number between 0 and 0.5, got 0.6"),
        ("lock-queue", {"work": -1}, "work", "work must be a number between 0 and 0.1, got -1"),
        (
            "pipeline",
            {"items": 1000, "pace": 0.5},
            "items",
            "items 1000, stages 3 and pace 0.5 s take 502 s to flow through; at most 30 s are "
            "allowed: fewer items or a shorter pace",
        ),
        (
            "lock-queue",
            {"items": 1000, "producers": 6, "consumers": 1},
            "items",
            "items 1000, producers 6, consumers 1 and work 0.01 s keep the consumers busy for "
            "120 s on the Pipe and the Queue; at most 30 s are allowed",
        ),
    ],
)
def test_invalid_parameters_are_refused(
    scenario_id: str, raw: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ParamError) as info:
        get_scenario(scenario_id).validate(raw)
    assert info.value.field == field
    assert message in str(info.value)


def test_unknown_scenario_is_refused_with_the_known_ids() -> None:
    with pytest.raises(ParamError, match="scenario must be one of ping-pong, one-way"):
        get_scenario("os.system")


def test_command_line_text_is_parsed_to_the_parameter_type() -> None:
    params = {p.name: p for p in get_scenario("custom").params}
    assert params["lock"].parse("off") is False
    assert params["rate"].parse("2.5") == 2.5
    with pytest.raises(ParamError, match="count must be an integer between 1 and 1000, got 'x'"):
        params["count"].parse("x")


def test_every_scenario_and_parameter_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    for scenario in SCENARIOS.values():
        assert f"`{scenario.id}`" in docs
        for param in scenario.params:
            assert f"| `{param.name}` |" in docs.split(f"`{scenario.id}`", 1)[1]
