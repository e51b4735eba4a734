"""poll: a consumer polls with a timeout while a producer sends at irregular intervals."""

import random
import time
from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def producer(conn: Connection, messages: int, max_pause: float) -> None:
    pauses = random.Random(7)  # the same irregular rhythm every run
    for i in range(messages):
        time.sleep(pauses.uniform(0, max_pause))
        conn.send(f"tick {i}")
    conn.send(None)
    conn.close()


def consumer(conn: Connection, timeout: float) -> None:
    while True:
        if conn.poll(timeout):  # wait at most `timeout` seconds for a message
            msg = conn.recv()  # does not block: poll said a frame is there
            if msg is None:
                break
            print(f"consumer: got {msg!r}")
        else:
            print(f"consumer: nothing within {timeout} s, doing other work")
    conn.close()


def main(params: Params, ctx: RunContext) -> None:
    reader, writer = pipecore.Pipe(duplex=False, name="poll")
    p = ctx.Process(
        target=producer, args=(writer, params["messages"], params["max_pause"]), name="producer"
    )
    c = ctx.Process(target=consumer, args=(reader, params["timeout"]), name="consumer")
    p.start()
    c.start()
    reader.close()
    writer.close()
    p.join(timeout=60)
    c.join(timeout=60)


SCENARIO = Scenario(
    id="poll",
    title={"en": "poll with a timeout", "zh": "带超时的 poll"},
    teaching={
        "en": "poll(timeout) waits at most timeout seconds and says whether a frame can be "
        "read, so the consumer never blocks in recv: it receives when poll is True and does "
        "something else when it is False.",
        "zh": "poll(timeout) 最多等待 timeout 秒，并告诉你是否有帧可读；消费者因此不会阻塞在 "
        "recv 上：poll 为 True 时接收，为 False 时去做别的事。",
    },
    params=[
        Param("messages", "int", 8, {"en": "messages to send", "zh": "发送的消息数"}, 1, 200),
        Param(
            "max_pause",
            "float",
            0.6,
            {"en": "longest pause between sends (s)", "zh": "两次发送之间的最长停顿（秒）"},
            0.0,
            2.0,
        ),
        Param(
            "timeout",
            "float",
            0.25,
            {"en": "poll timeout (s)", "zh": "poll 超时（秒）"},
            0.01,
            5.0,
        ),
    ],
    main=main,
    module=__name__,
)
