"""The `pipescope` command: `serve` the dashboard, `run` a scenario, `trace` a program, `export`."""

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from app import exportcmd, tracecmd
from app.settings import SETTINGS, Setting, Settings, SettingsError
from pipecore import headless


def _option_type(setting: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = setting.parse(text)
            setting.check(value)
        except SettingsError as exc:
            # argparse prints an ArgumentTypeError's message as it is, after the usage line.
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    parse.__name__ = setting.name
    return parse


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2), naming
    the command's --help instead of repeating the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line: `pipescope serve ...` and `pipescope run ...`."""
    parser = _Parser(prog="pipescope", description="See multiprocessing.Pipe traffic live.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the dashboard",
        description="Serve the dashboard, its REST API and its websocket.",
        epilog="Every setting is read from its environment variable; an option overrides it.",
    )
    serve.add_argument(
        "--reload", action="store_true", help="restart when the source changes (development)"
    )
    group = serve.add_argument_group("settings")
    for setting in SETTINGS:
        group.add_argument(
            setting.option,
            dest=setting.name,
            type=_option_type(setting),
            default=None,
            metavar=setting.name.upper(),
            help=f"{setting.help} [env {setting.env}; default {setting.default_text()}]",
        )
    run = commands.add_parser(
        "run",
        help="run one scenario in the terminal, without a server",
        description="Run one scenario and print its events; the exit code tells how it ended.",
    )
    headless.add_run_arguments(run)
    export = commands.add_parser(
        "export",
        help="write a recorded run's events as JSON Lines or a Chrome trace",
        description="Write a run kept in the record database; a Chrome trace opens in Perfetto.",
    )
    export.add_argument("run", help="the run's id, e.g. r7f3a2c")
    export.add_argument("--format", choices=("jsonl", "chrome"), default="jsonl")
    export.add_argument("--db", default=None, help="the record database [env PIPESCOPE_DB]")
    export.add_argument(
        "-o", "--output", default="-", help="file to write (default: standard output)"
    )
    trace = commands.add_parser(
        "trace",
        help="run your own program with every multiprocessing.Pipe traced",
        description=(
            "Run an unmodified Python program so that every multiprocessing.Pipe it creates, "
            "in the parent and in every child (spawn, forkserver, fork), is traced. Its output "
            "and exit status pass through unchanged."
        ),
        epilog="examples: pipescope trace --output run.jsonl -- python examples/pingpong.py; "
        "pipescope trace --server http://127.0.0.1:8000 -- python examples/pingpong.py",
    )
    trace.add_argument("--name", default=None, help="the run's name (default: the program's)")
    trace.add_argument(
        "--server", default=None, metavar="URL",
        help="show the run live on this pipescope server (e.g. http://127.0.0.1:8000) and "
        "record it there",
    )  # fmt: skip
    trace.add_argument(
        "--token", default=os.environ.get("PIPESCOPE_TOKEN"),
        help="the server's token, if it has one [env PIPESCOPE_TOKEN]",
    )  # fmt: skip
    trace.add_argument(
        "-o", "--output", default=None,
        help="write the events as JSON Lines to this file (default without --server: "
        "<program>.pipescope.jsonl)",
    )  # fmt: skip
    trace.add_argument("program", nargs=argparse.REMAINDER, help="-- python PROGRAM [ARGS...]")
    return parser


def serve(args: argparse.Namespace) -> int:
    """Start uvicorn with the settings from the environment and the options."""
    import uvicorn

    from app.main import create_app

    overrides = {setting.name: getattr(args, setting.name) for setting in SETTINGS}
    try:
        settings = Settings.from_env(os.environ, **overrides)
    except SettingsError as exc:
        print(f"pipescope serve: error: {exc}", file=sys.stderr)
        return 2
    if args.reload:
        # The reloading child builds its own app from the environment: hand it the settings.
        os.environ.update(settings.to_env())
        root = Path(__file__).resolve().parent.parent
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            reload=True,
            ws_per_message_deflate=settings.ws_compression,
            reload_dirs=[str(root / "app"), str(root / "pipecore")],
        )
    else:
        # uvicorn shuts down cleanly on SIGTERM, then raises the signal again for the
        # handler that was there before it: make that handler an orderly exit 0.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            ws_per_message_deflate=settings.ws_compression,
        )
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `pipescope` command with `argv` (default: sys.argv[1:]); return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        # --help and usage errors: argparse has printed them; report its code, don't exit.
        return exit.code if isinstance(exit.code, int) else 2
    if args.command == "serve":
        return serve(args)
    if args.command == "export":
        return exportcmd.export(args)
    if args.command == "trace":
        return tracecmd.trace(args)
    return headless.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
