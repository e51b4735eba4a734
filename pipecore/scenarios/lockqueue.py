"""lock-queue: a Pipe with a Lock on each end works like a multiprocessing.Queue, side by side."""

from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Lock

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


class VisibleQueue(Queue):  # type: ignore[type-arg]
    """A multiprocessing.Queue whose internal pipe is a traced Pipe, so it is drawn too."""

    def __init__(self, ctx: BaseContext) -> None:
        super().__init__(ctx=ctx)
        # Queue keeps a Pipe(duplex=False) in _reader/_writer and a feeder thread
        # that send_bytes() each pickled item; swap in a traced pipe before first use.
        self._reader.close()  # type: ignore[has-type]
        self._writer.close()  # type: ignore[has-type]
        self._reader, self._writer = pipecore.Pipe(duplex=False, name="Queue's own pipe")
        self._reset()  # type: ignore[attr-defined]


def producer(name: str, end: Connection, lock: Lock, queue: VisibleQueue, n: int) -> None:
    for i in range(n):
        with lock:  # one sender at a time on the shared end
            end.send(f"{name}: item {i}")
        queue.put(f"{name}: item {i}")  # Queue takes its own lock inside
    end.close()
    queue.close()
    queue.join_thread()  # wait until the feeder thread has written everything


def consumer(name: str, end: Connection, lock: Lock, queue: VisibleQueue) -> None:
    got = 0
    while True:
        with lock:  # one receiver at a time on the shared end
            item = end.recv()
        if item is None:
            break
        got += 1
    print(f"{name}: {got} items from the locked Pipe")
    got = 0
    while queue.get() is not None:
        got += 1
    print(f"{name}: {got} items from the Queue")
    end.close()


def main(params: Params, ctx: RunContext) -> None:
    n, producers, consumers = params["items"], params["producers"], params["consumers"]
    read_end, write_end = pipecore.Pipe(duplex=False, name="locked Pipe")
    send_lock, recv_lock = ctx.Lock(), ctx.Lock()
    queue = VisibleQueue(ctx)
    workers = [
        ctx.Process(
            target=producer, args=(f"P{i}", write_end, send_lock, queue, n), name=f"producer-{i}"
        )
        for i in range(producers)
    ]
    workers += [
        ctx.Process(
            target=consumer, args=(f"C{i}", read_end, recv_lock, queue), name=f"consumer-{i}"
        )
        for i in range(consumers)
    ]
    for p in workers:
        p.start()
    read_end.close()
    for p in workers[:producers]:
        p.join(timeout=30)
    for _ in range(consumers):  # one stop signal per consumer on each channel
        write_end.send(None)
        queue.put(None)
    write_end.close()
    for p in workers[producers:]:
        p.join(timeout=30)
    queue.close()
    queue.join_thread()


SCENARIO = Scenario(
    id="lock-queue",
    title={"en": "A Pipe plus a Lock is a Queue", "zh": "管道加锁就是队列"},
    teaching={
        "en": "Several producers and consumers can share a Pipe when a Lock guards each end. "
        "That is what multiprocessing.Queue does inside: a one-way Pipe, a lock for readers, a "
        "lock for writers and a feeder thread. Here the Queue's own pipe is drawn as well.",
        "zh": "当每一端都有一把锁保护时，多个生产者和消费者可以共享一个管道。"
        "multiprocessing.Queue 内部正是这样做的：一个单向管道、读者锁、写者锁和一个送数线程。"
        "这里把队列自己的管道也画了出来。",
    },
    params=[
        Param(
            "items", "int", 10, {"en": "items per producer", "zh": "每个生产者的条目数"}, 1, 1000
        ),
        Param("producers", "int", 2, {"en": "producer processes", "zh": "生产者进程数"}, 1, 6),
        Param("consumers", "int", 2, {"en": "consumer processes", "zh": "消费者进程数"}, 1, 6),
    ],
    main=main,
    module=__name__,
    processes=lambda params: int(params["producers"]) + int(params["consumers"]),
)
