"""A run's main process: `python -m pipecore.runmain --run-dir D --run-id R --scenario S ...`."""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import sys
import traceback

START_METHODS = ("forkserver", "spawn", "fork")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line RunManager builds."""
    parser = argparse.ArgumentParser(prog="python -m pipecore.runmain")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--params", default="{}", help="JSON object of parameters")
    parser.add_argument("--start-method", default="forkserver", choices=START_METHODS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Activate telemetry, validate the parameters and run the scenario; 0 on success."""
    args = parse_args(argv)
    # Imported here so that a spawned child re-importing this module as __mp_main__
    # does no work at import time.
    from pipecore import runmarks, telemetry
    from pipecore.scenarios import ParamError, get_scenario

    telemetry.activate(args.run_dir, args.run_id)
    code = 1
    try:
        # Only registered scenarios run: the request names one, nothing is imported from it.
        scenario = get_scenario(args.scenario)
        params = scenario.validate(json.loads(args.params))
        # Programs that use multiprocessing.Process directly get the chosen method too.
        multiprocessing.set_start_method(args.start_method, force=True)
        scenario.main(params, multiprocessing.get_context(args.start_method))
        code = 0
        # Workers still running now are ended by this process's exit, not by a fault.
        left = [p.pid for p in multiprocessing.active_children() if p.pid is not None]
        with contextlib.suppress(OSError):
            runmarks.write_left(args.run_dir, left)
    except ParamError as exc:
        print(f"pipescope: {exc.message}", file=sys.stderr)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        telemetry.record_exit(code)
        telemetry.deactivate()
    return code


if __name__ == "__main__":
    sys.exit(main())
