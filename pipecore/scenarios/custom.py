"""custom: a pair, pipeline or fan-in built from validated parameters (no code is accepted)."""

import contextlib
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Lock

import pipecore
from pipecore.scenarios.catalogue import Param, ParamError, Params, RunContext, Scenario


def pace(rate: float) -> None:
    if rate > 0:
        time.sleep(1 / rate)


def pattern(first: int, size: int) -> bytes:
    # Counting up modulo the prime 251: a spliced or shifted frame no longer matches.
    return bytes((first + i) % 251 for i in range(size))


def writer(
    number: int,
    out: Connection,
    lock: Lock | None,
    count: int,
    size: int,
    rate: float,
    unused: Connection | None = None,
) -> None:
    if unused is not None:
        # Under fork a writer inherits the readers' end: close it, or the pipe never looks
        # closed when the readers leave (no BrokenPipeError), and the writer waits for ever.
        unused.close()
    frame = pattern(65 + number % 26, size)  # A..., B..., one run of bytes per writer
    try:
        for _ in range(count):
            with lock if lock is not None else contextlib.nullcontext():
                out.send_bytes(frame)
            pace(rate)
    except OSError as exc:
        print(f"writer {number}: {type(exc).__name__}: {exc}")
    out.close()


def reader(number: int, inp: Connection, lock: Lock | None, size: int) -> None:
    good = bad = 0
    while True:
        try:
            with lock if lock is not None else contextlib.nullcontext():
                frame = inp.recv_bytes(2 * size + 16)
        except (OSError, EOFError) as exc:
            print(f"reader {number}: {type(exc).__name__}: {exc}")
            break
        if not frame:  # the empty frame main sends when the writers are done
            break
        if frame == pattern(frame[0], size):
            good += 1
        else:
            bad += 1
    print(f"reader {number}: {good} intact frames, {bad} corrupted")
    inp.close()


def stage(number: int, inp: Connection, out: Connection) -> None:
    while frame := inp.recv_bytes():
        out.send_bytes(frame)
    out.send_bytes(b"")  # pass the end-of-work frame on
    print(f"stage {number}: done")


def consumer(readers: list[Connection], size: int) -> None:
    open_readers, received = list(readers), 0
    while open_readers:
        for conn in wait(open_readers):
            assert isinstance(conn, Connection)
            if conn.recv_bytes():
                received += 1
            else:
                open_readers.remove(conn)
    print(f"consumer: {received} frames from {len(readers)} pipes")


def finish(workers: Sequence[BaseProcess], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for p in workers:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
    for p in workers:
        if p.is_alive():  # stuck, e.g. reading a corrupted stream: end it
            p.terminate()
            p.join(timeout=5)


def main(params: Params, ctx: RunContext) -> None:
    topology, duplex, size = params["topology"], params["duplex"], params["size"]
    ps: list[BaseProcess]
    count, rate, writers = params["count"], params["rate"], params["writers"]
    if topology == "pair":
        inp, out = pipecore.Pipe(duplex, name="custom pair")
        wlock = ctx.Lock() if params["lock"] else None
        rlock = ctx.Lock() if params["lock"] else None
        ws = [
            ctx.Process(
                target=writer, args=(i, out, wlock, count, size, rate, inp), name=f"writer-{i}"
            )
            for i in range(writers)
        ]
        rs = [
            ctx.Process(target=reader, args=(i, inp, rlock, size), name=f"reader-{i}")
            for i in range(params["readers"])
        ]
        for p in ws + rs:
            p.start()
        inp.close()
        # Wait for the writers, unless every reader is gone (then nobody would drain the pipe).
        deadline = time.monotonic() + 40
        while any(p.is_alive() for p in ws) and any(p.is_alive() for p in rs):
            wait([p.sentinel for p in ws + rs], timeout=max(0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                break
        finish(ws, 1)
        with contextlib.suppress(OSError):
            for _ in rs:
                out.send_bytes(b"")  # one end-of-work frame per reader
        out.close()
        finish(rs, 5)
    elif topology == "pipeline":
        links = [pipecore.Pipe(duplex, name=f"link {i}") for i in range(params["stages"] + 1)]
        ps = [
            ctx.Process(
                target=writer, args=(0, links[0][1], None, count, size, rate), name="source"
            )
        ]
        for i in range(params["stages"]):
            ps.append(
                ctx.Process(target=stage, args=(i, links[i][0], links[i + 1][1]), name=f"stage-{i}")
            )
        ps.append(ctx.Process(target=reader, args=(0, links[-1][0], None, size), name="sink"))
        for worker in ps:
            worker.start()
        for a, b in links[1:]:
            a.close()
            b.close()
        finish(ps[:1], 40)
        links[0][1].send_bytes(b"")  # end of work, passed down the line
        links[0][0].close()
        links[0][1].close()
        finish(ps[1:], 10)
    else:
        pipes = [pipecore.Pipe(duplex, name=f"from writer {i}") for i in range(writers)]
        ps = [
            ctx.Process(target=writer, args=(i, b, None, count, size, rate), name=f"writer-{i}")
            for i, (_, b) in enumerate(pipes)
        ]
        ps.append(ctx.Process(target=consumer, args=([a for a, _ in pipes], size), name="consumer"))
        for worker in ps:
            worker.start()
        finish(ps[:-1], 40)
        for a, b in pipes:
            b.send_bytes(b"")
            a.close()
            b.close()
        finish(ps[-1:], 10)


def _processes(params: Params) -> int:
    if params["topology"] == "pair":
        return int(params["writers"]) + int(params["readers"])
    if params["topology"] == "pipeline":
        return int(params["stages"]) + 2
    return int(params["writers"]) + 1


# The longest a writer may take at its rate: the run waits 40 s for its workers, then ends them.
SEND_SECONDS = 30


def _check(params: Params) -> None:
    rate, count = float(params["rate"]), int(params["count"])
    if rate > 0 and count / rate > SEND_SECONDS:
        raise ParamError(
            "count",
            f"count {count} at rate {rate:g} a second takes {count / rate:.0f} s; a writer may "
            f"send for at most {SEND_SECONDS} s: at most {int(SEND_SECONDS * rate)} messages at "
            "this rate, or a higher rate (0: as fast as possible)",
        )
    if _processes(params) > 15:
        field = "stages" if params["topology"] == "pipeline" else "writers"
        raise ParamError(
            field,
            f"a {params['topology']} with these parameters needs {_processes(params)} worker "
            "processes; at most 15 are allowed",
        )


SCENARIO = Scenario(
    id="custom",
    title={"en": "Custom topology", "zh": "自定义拓扑"},
    teaching={
        "en": "Build your own experiment from parameters: a pair of ends shared by several "
        "writers and readers (with or without a lock), a pipeline of stages, or several pipes "
        "fanning into one consumer. Try two writers without a lock and frames over 16 KiB.",
        "zh": "用参数搭建你自己的实验：由多个写者和读者共享的一对端（加锁或不加锁）、"
        "多阶段流水线，或汇聚到一个消费者的多个管道。试试两个写者、不加锁、帧大于 16 KiB。",
    },
    params=[
        Param(
            "topology",
            "choice",
            "pair",
            {"en": "pair, pipeline or fan-in", "zh": "一对端、流水线或汇聚"},
            choices=("pair", "pipeline", "fan-in"),
        ),
        Param("duplex", "bool", True, {"en": "duplex pipes (else one-way)", "zh": "双向管道"}),
        Param("size", "int", 1024, {"en": "bytes per message", "zh": "每条消息字节数"}, 1, 1 << 20),
        Param(
            "rate",
            "float",
            20.0,
            {"en": "messages per second per writer (0: as fast as possible)", "zh": "每秒消息数"},
            0.0,
            1000.0,
        ),
        Param("count", "int", 10, {"en": "messages per writer", "zh": "每个写者的消息数"}, 1, 1000),
        Param("writers", "int", 1, {"en": "writers (pair, fan-in)", "zh": "写者数"}, 1, 8),
        Param("readers", "int", 1, {"en": "readers (pair)", "zh": "读者数"}, 1, 8),
        Param("stages", "int", 2, {"en": "middle stages (pipeline)", "zh": "中间阶段数"}, 1, 8),
        Param("lock", "bool", True, {"en": "a Lock on each shared end", "zh": "共享端加锁"}),
    ],
    main=main,
    module=__name__,
    processes=_processes,
    check=_check,
)
