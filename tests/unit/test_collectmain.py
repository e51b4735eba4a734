"""The run's collector process and its messages: what the server receives, and when."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipecore import collectwire
from pipecore.parts import array_check, decode_events, deflated, encode_events

Event = dict[str, Any]


def _call(seq: int, **fields: Any) -> Event:
    return {"kind": "call", "op": "send_bytes", "phase": "end", "seq": seq, **fields}


def test_messages_survive_being_cut_anywhere() -> None:
    first = [_call(3), {"kind": "pipe", "pipe": "p1", "seq": 4}, _call(5, text="进程 ☃")]
    second = [_call(6, big=1 << 70)]  # past 64 bits: orjson refuses it, the fallback takes it
    texts = [encode_events(first), encode_events(second)]
    pieces = [deflated(text) for text in texts]
    sizes = [[len(p), len(t), array_check(t)] for p, t in zip(pieces, texts, strict=True)]
    header = {
        "seq": 6,
        "parts": [[3, 5, 3, 2, *sizes[0]], [6, 6, 1, 1, *sizes[1]]],
        "kept": [first[1]],
        "killed": [[42, "Process-1", "SIGKILL", "killed by SIGKILL"]],
        "final": True,
    }
    wire = b"".join(collectwire.encode(header, pieces) + collectwire.encode({"seq": 6}, []))
    reader = collectwire.MessageReader()
    got: list[collectwire.Message] = []
    for at in range(0, len(wire), 7):
        got += reader.feed(wire[at : at + 7])
    assert len(got) == 2
    message = got[0]
    assert [p.events() for p in message.parts] == [first, second]
    # Each part holds its piece as it came, and its JSON inflated from it.
    assert [p.deflated() for p in message.parts] == pieces
    assert [p.json() for p in message.parts] == texts
    assert [(p.size, p.array_check()) for p in message.parts] == [tuple(s[1:]) for s in sizes]
    assert [(p.first, p.last, p.count, p.others) for p in message.parts] == [
        (3, 5, 3, 2),
        (6, 6, 1, 1),
    ]
    assert message.kept == [first[1]] and message.final and message.seq == 6
    assert message.killed == [(42, "Process-1", "SIGKILL", "killed by SIGKILL")]
    assert got[1].parts == [] and not got[1].final


def test_a_stream_that_is_not_messages_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a collector message under"):
        collectwire.MessageReader().feed(b"\xff" * 16)
    part = [1, 1, 1, 1, 99, 2, 0]
    lying = b"".join(collectwire.encode({"seq": 1, "parts": [part]}, [b"{}"]))
    with pytest.raises(ValueError, match="expected a body of 99 bytes from the header, got 2"):
        collectwire.MessageReader().feed(lying)


def _start(run_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipecore.collectmain", "--run-dir", str(run_dir),
         "--run-id", "r000001", "--first-seq", "3", "--deadlock-ns", str(10**9)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip


def test_asked_for_the_final_drain_it_sends_it_and_removes_the_run_directory(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    feed = _start(run_dir)
    out, _ = feed.communicate(b"final\n", timeout=30)
    assert feed.returncode == 0
    messages = collectwire.MessageReader().feed(out)
    assert messages and messages[-1].final and messages[-1].seq == 2
    assert not run_dir.exists()


def test_when_the_server_is_gone_it_exits_and_leaves_the_run_to_the_sweep(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    feed = _start(run_dir)
    assert feed.stdin is not None and feed.stdout is not None
    feed.stdout.close()  # the server died: nobody reads
    feed.stdin.close()
    assert feed.wait(timeout=30) == 0
    assert run_dir.is_dir() and os.listdir(run_dir)


def test_decode_reads_what_encode_wrote() -> None:
    events = [_call(1, preview="b'\\x00'"), _call(2)]
    assert decode_events(encode_events(events)) == events


def test_a_spare_collector_takes_the_run_it_is_given_later(tmp_path: Path) -> None:
    from pipecore import collectmain

    spare = collectmain.start_spare()
    run_dir = tmp_path / "run"
    feed = collectmain.start(str(run_dir), "r000001", 3, 10**9, spare)
    assert feed is spare
    out, _ = feed.communicate(b"final\n", timeout=30)
    assert feed.returncode == 0
    messages = collectwire.MessageReader().feed(out)
    assert messages[-1].final and messages[-1].seq == 2
    assert not run_dir.exists()


def test_a_spare_no_run_took_ends_with_its_input() -> None:
    from pipecore import collectmain

    spare = collectmain.start_spare()
    collectmain.end(spare)
    assert spare.returncode == 0


def test_the_pipe_to_the_server_holds_a_megabyte() -> None:
    import fcntl

    from pipecore.collectmain import PIPE_BYTES, end, start_spare

    # The server's reading thread then takes up to a megabyte per read, not 64 KiB.
    spare = start_spare()
    try:
        assert spare.stdout is not None
        assert fcntl.fcntl(spare.stdout.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_BYTES
    finally:
        end(spare)
