"""fan-in: several pipes into one consumer that waits on all of them with connection.wait."""

import time
from multiprocessing.connection import Connection, wait

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def producer(number: int, out: Connection, count: int) -> None:
    for i in range(count):
        time.sleep(0.02 * (number + 1))  # each producer at its own pace
        out.send(f"P{number}: {i}")
    out.send(None)
    out.close()


def consumer(readers: list[Connection]) -> None:
    open_readers = list(readers)
    while open_readers:
        for conn in wait(open_readers):  # returns the ends that have something to read
            assert isinstance(conn, Connection)
            msg = conn.recv()
            if msg is None:  # that producer is done
                open_readers.remove(conn)
                conn.close()
            else:
                print(f"consumer: {msg}")
    print("consumer: every producer is done")


def main(params: Params, ctx: RunContext) -> None:
    pipes = [pipecore.Pipe(duplex=False, name=f"from P{i}") for i in range(params["producers"])]
    workers = [
        ctx.Process(target=producer, args=(i, writer, params["count"]), name=f"producer-{i}")
        for i, (_, writer) in enumerate(pipes)
    ]
    workers.append(ctx.Process(target=consumer, args=([r for r, _ in pipes],), name="consumer"))
    for p in workers:
        p.start()
    for reader, writer in pipes:
        reader.close()
        writer.close()
    for p in workers:
        p.join(timeout=30)


SCENARIO = Scenario(
    id="fan-in",
    title={"en": "Fan-in with connection.wait", "zh": "用 connection.wait 汇聚"},
    teaching={
        "en": "One consumer serves several pipes without blocking on any one of them: "
        "multiprocessing.connection.wait returns the ends that are ready, and the consumer "
        "receives from those. Each producer ends with a sentinel, and the consumer stops when "
        "every producer is done.",
        "zh": "一个消费者同时服务多个管道，而不会阻塞在其中任何一个上："
        "multiprocessing.connection.wait 返回已就绪的端，消费者只从这些端接收。"
        "每个生产者以哨兵结束，所有生产者都结束后消费者停止。",
    },
    params=[
        Param("producers", "int", 3, {"en": "producer processes", "zh": "生产者进程数"}, 1, 12),
        Param(
            "count", "int", 5, {"en": "messages per producer", "zh": "每个生产者的消息数"}, 1, 1000
        ),
    ],
    main=main,
    module=__name__,
    processes=lambda params: int(params["producers"]) + 1,
)
