"""backpressure: a fast producer fills the kernel buffer and blocks until a slow consumer reads."""

import time
from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def producer(conn: Connection, messages: int, size: int) -> None:
    for i in range(messages):
        started = time.monotonic()
        conn.send(bytes([i % 256]) * size)  # blocks while the pipe is full
        waited = time.monotonic() - started
        if waited > 0.01:
            print(f"producer: send {i} waited {waited:.2f} s for room in the pipe")
    conn.send(None)
    conn.close()


def consumer(conn: Connection, delay: float) -> None:
    received = 0
    while (msg := conn.recv()) is not None:
        received += len(msg)
        time.sleep(delay)  # a slow consumer
    print(f"consumer: received {received} bytes")
    conn.close()


def main(params: Params, ctx: RunContext) -> None:
    # A one-way Pipe is an os.pipe: on Linux its kernel buffer holds 64 KiB.
    reader, writer = pipecore.Pipe(duplex=False, name="backpressure")
    p = ctx.Process(
        target=producer, args=(writer, params["messages"], params["size"]), name="producer"
    )
    c = ctx.Process(target=consumer, args=(reader, params["delay"]), name="consumer")
    p.start()
    c.start()
    reader.close()
    writer.close()
    p.join(timeout=60)
    c.join(timeout=60)


SCENARIO = Scenario(
    id="backpressure",
    title={"en": "Back-pressure: a full pipe blocks send", "zh": "背压：管道满时 send 阻塞"},
    teaching={
        "en": "The kernel buffers a pipe's bytes up to its capacity (64 KiB for an os.pipe on "
        "Linux). A producer faster than its consumer fills it; then send blocks until the "
        "consumer reads and makes room. The pipe paces the producer to the consumer.",
        "zh": "内核为管道缓存字节，直到容量上限（Linux 上 os.pipe 为 64 KiB）。"
        "生产者比消费者快时会把缓冲区填满，此后 send 阻塞，直到消费者读走数据腾出空间。"
        "管道让生产者跟上消费者的节奏。",
    },
    params=[
        Param("messages", "int", 24, {"en": "messages to send", "zh": "发送的消息数"}, 1, 1000),
        Param(
            "size",
            "int",
            16384,
            {"en": "bytes per message", "zh": "每条消息的字节数"},
            1,
            1 << 20,
        ),
        Param(
            "delay",
            "float",
            0.1,
            {"en": "consumer's pause after each recv (s)", "zh": "消费者每次 recv 后的停顿（秒）"},
            0.0,
            2.0,
        ),
    ],
    main=main,
    module=__name__,
)
