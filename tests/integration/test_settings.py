"""Settings: the environment, validation messages, and the README's table."""

from pathlib import Path

import pytest

from app.settings import SETTINGS, Settings, SettingsError
from app.settings_docs import settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_listen_on_localhost_only() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.token) == ("127.0.0.1", 8000, None)


def test_environment_variables_are_parsed_to_their_types() -> None:
    settings = Settings.from_env(
        {
            "PIPESCOPE_PORT": "0",
            "PIPESCOPE_TOKEN": "s3cret",
            "PIPESCOPE_ALLOWED_ORIGINS": "http://localhost:5173, https://example.org",
            "PIPESCOPE_MAX_RUN_SECONDS": "2.5",
            "PIPESCOPE_MAX_RUNS": "1",
            "UNRELATED": "x",
        }
    )
    assert settings.port == 0
    assert settings.token == "s3cret"
    assert settings.allowed_origins == ("http://localhost:5173", "https://example.org")
    assert settings.max_run_seconds == 2.5
    assert settings.max_runs == 1


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("ON", True), ("1", True), ("no", False), ("0", False)]
)
def test_a_switch_takes_the_usual_spellings(value: str, expected: bool) -> None:
    settings = Settings.from_env({"PIPESCOPE_WS_COMPRESSION": value})
    assert settings.ws_compression is expected
    assert Settings.from_env(settings.to_env()).ws_compression is expected


def test_an_empty_token_means_no_token() -> None:
    assert Settings.from_env({"PIPESCOPE_TOKEN": ""}).token is None


def test_options_override_the_environment() -> None:
    settings = Settings.from_env({"PIPESCOPE_PORT": "9000"}, port=9001, host=None)
    assert (settings.port, settings.host) == (9001, "127.0.0.1")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PIPESCOPE_PORT", "eighty", "(--port): expected an integer from 0 to 65535, got 'eighty'"),
        ("PIPESCOPE_PORT", "70000", "(--port): expected an integer from 0 to 65535, got 70000"),
        ("PIPESCOPE_MAX_RUNS", "0", "(--max-runs): expected an integer from 1 to 64, got 0"),
        (
            "PIPESCOPE_VIEWER_FPS",
            "fast",
            "(--viewer-fps): expected a number from 1 to 240, got 'fast'",
        ),
        (
            "PIPESCOPE_LIVE_EVENTS",
            "10",
            "(--live-events): expected an integer from 1000 to 10000000, got 10",
        ),
        ("PIPESCOPE_SPARES", "9", "(--spares): expected an integer from 0 to 8, got 9"),
        ("PIPESCOPE_SPARES", "-1", "(--spares): expected an integer from 0 to 8, got -1"),
        ("PIPESCOPE_SPARES", "1.5", "(--spares): expected an integer from 0 to 8, got '1.5'"),
        ("PIPESCOPE_SPARES", "two", "(--spares): expected an integer from 0 to 8, got 'two'"),
        (
            "PIPESCOPE_WS_COMPRESSION",
            "maybe",
            "(--ws-compression): expected true or false, got 'maybe'",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_variable_bound_and_value(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value) == f"{variable} {expected}"


def test_values_given_in_code_are_checked_too() -> None:
    with pytest.raises(SettingsError, match=r"--max-message-bytes.*got 10"):
        Settings(max_message_bytes=10)


def test_settings_survive_the_round_trip_through_the_environment() -> None:
    settings = Settings(port=0, token="t", allowed_origins=("http://a:1", "http://b:2"))
    assert Settings.from_env(settings.to_env()) == settings


def test_every_setting_has_a_variable_an_option_and_help() -> None:
    names = [setting.name for setting in SETTINGS]
    assert names == list(Settings.__dataclass_fields__)
    for setting in SETTINGS:
        assert setting.env == "PIPESCOPE_" + setting.name.upper()
        assert setting.option == "--" + setting.name.replace("_", "-")
        assert len(setting.help) > 10, setting.name


def test_markdown_table_has_one_row_per_setting() -> None:
    rows = settings_markdown().strip().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [setting.name for setting in SETTINGS]
    assert "| `port` | `PIPESCOPE_PORT` | `--port` | `8000` |" in settings_markdown()


def test_readme_settings_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
    assert start in readme and end in readme, f"README.md needs the markers {start} {end}"
    table = readme.split(start, 1)[1].split(end, 1)[0]
    generate = (
        'python -c "from app.settings_docs import settings_markdown; print(settings_markdown())"'
    )
    assert table.strip() == settings_markdown().strip(), (
        f"README.md's settings table differs from app/settings.py; regenerate it with: {generate}"
    )


def test_retention_settings_reach_the_record_store() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(Settings(db=":memory:", keep_runs=3, keep_events=5000))
    with TestClient(app):
        store = app.state.store
        assert (store.max_runs, store.max_events) == (3, 5000)


def test_the_live_event_bound_reaches_the_run_manager() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(Settings(db=":memory:", live_events=5000))
    with TestClient(app):
        assert app.state.manager.live_events == 5000


@pytest.mark.parametrize("spares", [0, 8])
def test_the_spare_count_is_read_from_the_environment_within_its_bounds(spares: int) -> None:
    assert Settings.from_env({"PIPESCOPE_SPARES": str(spares)}).spares == spares
    assert Settings().spares == 2


def test_the_spare_count_reaches_the_run_manager() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(Settings(db=":memory:", spares=0))
    with TestClient(app):
        assert app.state.manager.spares == 0
