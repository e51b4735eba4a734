"""race: two writers, then two readers, on one end without a lock; frames interleave and corrupt."""

from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def pattern(first: int, size: int) -> bytes:
    # Each writer's frames count up from its own first byte (A, B, C ...), modulo the
    # prime 251: a frame shifted or spliced by even a few bytes no longer matches.
    return bytes((first + i) % 251 for i in range(size))


def writer(
    conn: Connection, unused: Connection, first: int, frames: int, size: int, start: Barrier
) -> None:
    # Under fork a child inherits every end its parent held: close the one it does not use,
    # or the pipe never looks closed to the others (no EOF, no BrokenPipeError).
    unused.close()
    frame = pattern(first, size)
    start.wait()  # start together with the others, so that they overlap
    try:
        for _ in range(frames):
            # Above 16 KiB the header and the payload go out in two writes, and the
            # other writer's bytes can land between them.
            conn.send_bytes(frame)
    except OSError as exc:  # the reader gave up and closed its end
        print(f"writer {chr(first)}: {type(exc).__name__}: {exc}")
    conn.close()


def reader(
    conn: Connection, unused: Connection, label: str, expected: int, size: int, start: Barrier
) -> None:
    unused.close()
    good = 0
    start.wait()
    while good < expected:
        if not conn.poll(2.0):
            print(f"{label}: no frame for 2 s, stopping")
            break
        try:
            frame = conn.recv_bytes(2 * size)
        except (OSError, EOFError) as exc:
            print(f"{label}: after {good} good frames: {type(exc).__name__}: {exc}")
            break
        intact = pattern(frame[0], size) if frame else b""
        if frame != intact:
            at = next(
                (i for i, (x, y) in enumerate(zip(frame, intact, strict=False)) if x != y),
                min(len(frame), size),
            )
            print(
                f"{label}: frame {good + 1} is CORRUPTED: {len(frame)} bytes, not one writer's "
                f"run of bytes from byte {at} on: {frame[max(0, at - 4) : at + 8]!r}"
            )
            break
        good += 1
    else:
        print(f"{label}: all {good} frames intact")
    conn.close()


def finish(processes: list[BaseProcess], seconds: float) -> None:
    for p in processes:
        p.join(timeout=seconds)
    for p in processes:
        if p.is_alive():  # stuck in a send nobody will read: end it
            p.terminate()
            p.join(timeout=5)


def main(params: Params, ctx: RunContext) -> None:
    frames, size = params["frames"], params["size"]

    # Two writers share one end.
    read_end, shared_end = pipecore.Pipe(duplex=False, name="two writers")
    start = ctx.Barrier(3)
    w1 = ctx.Process(
        target=writer, args=(shared_end, read_end, ord("A"), frames, size, start), name="writer-A"
    )
    w2 = ctx.Process(
        target=writer, args=(shared_end, read_end, ord("B"), frames, size, start), name="writer-B"
    )
    r = ctx.Process(
        target=reader,
        args=(read_end, shared_end, "reader", 2 * frames, size, start),
        name="reader",
    )
    for p in (w1, w2, r):
        p.start()
    read_end.close()
    shared_end.close()
    finish([r], 30)
    finish([w1, w2], 1)

    if params["two_readers"]:
        # Two readers share one end.
        shared_end, write_end = pipecore.Pipe(duplex=False, name="two readers")
        start = ctx.Barrier(3)
        w = ctx.Process(
            target=writer,
            args=(write_end, shared_end, ord("C"), 2 * frames, size, start),
            name="writer",
        )
        r1 = ctx.Process(
            target=reader,
            args=(shared_end, write_end, "reader-1", frames, size, start),
            name="reader-1",
        )
        r2 = ctx.Process(
            target=reader,
            args=(shared_end, write_end, "reader-2", frames, size, start),
            name="reader-2",
        )
        for p in (w, r1, r2):
            p.start()
        shared_end.close()
        write_end.close()
        finish([r1, r2], 30)
        finish([w], 1)


SCENARIO = Scenario(
    id="race",
    title={"en": "Race: two processes on one end", "zh": "竞争：两个进程共用一端"},
    teaching={
        "en": "A Connection end is not safe for two processes at once. A frame is a length "
        "header and a payload, written (and read) by separate system calls for large frames; "
        "two writers interleave their headers and payloads, two readers steal each other's "
        "bytes. The receiver then reads a frame made of both, or a header made of payload: "
        "the CRC check marks the frame corrupted.",
        "zh": "一个连接端不能被两个进程同时使用。一帧由长度头和数据组成，大帧的头和数据由不同的"
        "系统调用写入（和读出）；两个写者会交错写入各自的头和数据，两个读者会互相抢走对方的字节。"
        "接收方于是读到混合两者的帧，或把数据当成长度头：CRC 校验会把该帧标为损坏。",
    },
    params=[
        Param("frames", "int", 100, {"en": "frames per writer", "zh": "每个写者的帧数"}, 1, 2000),
        Param(
            "size",
            "int",
            65536,
            {"en": "bytes per frame (over 16 KiB to split header and payload)", "zh": "每帧字节数"},
            1,
            1 << 20,
        ),
        Param(
            "two_readers",
            "bool",
            True,
            {"en": "then show two readers on one end", "zh": "随后演示两个读者共用一端"},
        ),
    ],
    main=main,
    module=__name__,
    processes=lambda params: 6 if params["two_readers"] else 3,
)
