"""race-locked: the race, with every send and recv on the shared end serialised by a Lock."""

import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier, Lock

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario

# A Lock is not fair: a reader that takes it again at once can starve the other one.
# Two readers each use a frame for a moment outside the lock, so that they take turns.
USE_SECONDS = 0.002


def writer(
    conn: Connection, fill: bytes, frames: int, size: int, lock: Lock, start: Barrier
) -> None:
    frame = fill * size
    start.wait()  # start together with the others, as in the race
    for _ in range(frames):
        with lock:  # header and payload leave together
            conn.send_bytes(frame)
    conn.close()


def last_writer(conn: Connection, frames: int, size: int, readers: int, start: Barrier) -> None:
    frame = b"C" * size
    start.wait()
    for _ in range(frames):
        conn.send_bytes(frame)
    for _ in range(readers):
        conn.send_bytes(b"")  # one empty frame tells one reader to stop
    conn.close()


def reader(
    conn: Connection,
    label: str,
    size: int,
    lock: Lock,
    start: Barrier,
    expected: int = -1,
    use: float = 0.0,
) -> None:
    good = 0
    start.wait()
    while good != expected:
        with lock:  # header and payload are read by one reader
            frame = conn.recv_bytes(2 * size)
        if not frame:
            break
        if len(frame) != size or frame != frame[:1] * size:
            print(f"{label}: frame {good + 1} is CORRUPTED")
            break
        good += 1
        time.sleep(use)  # use the frame outside the lock: meanwhile the other reader takes one
    print(f"{label}: {good} frames, all intact")
    conn.close()


def main(params: Params, ctx: RunContext) -> None:
    frames, size = params["frames"], params["size"]

    # Two writers share one end, taking turns under a lock.
    read_end, shared_end = pipecore.Pipe(duplex=False, name="two writers, locked")
    # Keep every Lock referenced until the children are joined: a Lock dropped
    # here is unlinked before a spawned child can open it.
    lock, reader_lock = ctx.Lock(), ctx.Lock()
    start = ctx.Barrier(3)  # no frame moves until all three processes are ready
    w1 = ctx.Process(
        target=writer, args=(shared_end, b"A", frames, size, lock, start), name="writer-A"
    )
    w2 = ctx.Process(
        target=writer, args=(shared_end, b"B", frames, size, lock, start), name="writer-B"
    )
    r = ctx.Process(
        target=reader,
        args=(read_end, "reader", size, reader_lock, start, 2 * frames),
        name="reader",
    )
    for p in (w1, w2, r):
        p.start()
    read_end.close()
    shared_end.close()
    for p in (w1, w2, r):
        p.join(timeout=30)

    if params["two_readers"]:
        # Two readers share one end, taking turns under a lock.
        shared_end, write_end = pipecore.Pipe(duplex=False, name="two readers, locked")
        readers_lock, start = ctx.Lock(), ctx.Barrier(3)
        w = ctx.Process(
            target=last_writer, args=(write_end, 2 * frames, size, 2, start), name="writer"
        )
        r1 = ctx.Process(
            target=reader,
            args=(shared_end, "reader-1", size, readers_lock, start, -1, USE_SECONDS),
            name="reader-1",
        )
        r2 = ctx.Process(
            target=reader,
            args=(shared_end, "reader-2", size, readers_lock, start, -1, USE_SECONDS),
            name="reader-2",
        )
        for p in (w, r1, r2):
            p.start()
        shared_end.close()
        write_end.close()
        for p in (w, r1, r2):
            p.join(timeout=30)


SCENARIO = Scenario(
    id="race-locked",
    title={"en": "Race fixed with a Lock", "zh": "用锁消除竞争"},
    teaching={
        "en": "The same processes as in the race, but each send_bytes and each recv_bytes on "
        "the shared end happens while holding a multiprocessing Lock. A frame's header and "
        "payload now travel together: every frame arrives intact.",
        "zh": "与竞争场景相同的进程，但共享端上的每次 send_bytes 和 recv_bytes 都在持有 "
        "multiprocessing 锁时进行。帧头和数据因此一起传输：每一帧都完整到达。",
    },
    params=[
        Param("frames", "int", 100, {"en": "frames per writer", "zh": "每个写者的帧数"}, 1, 2000),
        Param(
            "size",
            "int",
            65536,
            {"en": "bytes per frame", "zh": "每帧字节数"},
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
