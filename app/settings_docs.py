"""The settings table as markdown, for the README."""

from app.settings import SETTINGS


def settings_markdown() -> str:
    """The README's settings table, rendered from SETTINGS."""
    lines = [
        "| Setting | Environment variable | `pipescope serve` option | Default | Meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        meaning = s.help.replace("|", "\\|")
        lines.append(
            f"| `{s.name}` | `{s.env}` | `{s.option}` | `{s.default_text()}` | {meaning} |"
        )
    return "\n".join(lines) + "\n"
