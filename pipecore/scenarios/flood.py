"""flood: a writer sends small frames as fast as it can; the load the dashboard must bear."""

import time
from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def writer(conn: Connection, messages: int, size: int) -> None:
    frame = b"f" * size
    # Timed from the first frame on: in step mode the first call waits for its step.
    conn.send_bytes(frame)
    start = time.perf_counter()
    for _ in range(messages - 1):
        conn.send_bytes(frame)
    seconds = time.perf_counter() - start
    conn.send_bytes(b"")  # end of the flood
    conn.close()
    rate = (messages - 1) / seconds if seconds > 0 else float("inf")
    print(
        f"writer: {messages} frames; after the first, {messages - 1} in {seconds:.3f} s, "
        f"{rate:.0f} frames/s"
    )


def reader(conn: Connection) -> None:
    received = 0
    while conn.recv_bytes():
        received += 1
    conn.close()
    print(f"reader: {received} frames")


def main(params: Params, ctx: RunContext) -> None:
    read_end, write_end = pipecore.Pipe(duplex=False, name="flood")
    r = ctx.Process(target=reader, args=(read_end,), name="reader")
    w = ctx.Process(
        target=writer, args=(write_end, params["messages"], params["size"]), name="writer"
    )
    r.start()
    w.start()
    read_end.close()
    write_end.close()
    w.join()
    r.join()


SCENARIO = Scenario(
    id="flood",
    title={"en": "Flood: as fast as the pipe goes", "zh": "洪流：管道能跑多快就跑多快"},
    teaching={
        "en": "A writer sends small frames without pause and a reader takes them as they come. "
        "Each frame is four traced calls; the writer prints how many frames per second it "
        "managed. This is the load the benchmark uses to show whether watching slows the workers.",
        "zh": "写者不停地发送小帧，读者随到随取。每一帧是四次被追踪的调用；写者打印它每秒发送的"
        "帧数。基准测试用这个负载来检验观看是否会拖慢工作进程。",
    },
    params=[
        Param(
            "messages",
            "int",
            20_000,
            {"en": "frames the writer sends", "zh": "写者发送的帧数"},
            1,
            10_000_000,
        ),
        Param("size", "int", 100, {"en": "bytes per frame", "zh": "每帧字节数"}, 1, 65_536),
    ],
    main=main,
    module=__name__,
)
