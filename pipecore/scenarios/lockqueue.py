"""lock-queue: a Pipe with a Lock on each end works like a multiprocessing.Queue, side by side."""

import time
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Lock

import pipecore
from pipecore.scenarios.catalogue import Param, ParamError, Params, RunContext, Scenario

WORK_SECONDS = 30  # the longest the consumers may work on all the items


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


def producer(
    name: str,
    end: Connection,
    lock: Lock,
    queue: VisibleQueue,
    n: int,
    barriers: tuple[Barrier, Barrier],
) -> None:
    start, sent = barriers
    start.wait()  # every consumer is ready before the first item is sent
    for i in range(n):
        with lock:  # one sender at a time on the shared end
            end.send(f"{name}: item {i}")
        queue.put(f"{name}: item {i}")  # Queue takes its own lock inside
    end.close()
    # Every item is in the Pipe: main may send the stop signals, and the consumers turn to
    # the Queue, whose pipe may be full while its feeder thread waits for them.
    sent.wait()
    queue.close()
    queue.join_thread()  # wait until the feeder thread has written everything


def consumer(
    name: str, end: Connection, lock: Lock, queue: VisibleQueue, work: float, start: Barrier
) -> None:
    start.wait()
    got = 0
    while True:
        with lock:  # one receiver at a time on the shared end
            item = end.recv()
        if item is None:
            break
        got += 1
        time.sleep(work)  # work on it outside the lock: meanwhile another consumer takes one
    print(f"{name}: {got} items from the locked Pipe")
    got = 0
    while queue.get() is not None:  # get() takes the Queue's reader lock inside
        got += 1
        time.sleep(work)
    print(f"{name}: {got} items from the Queue")
    end.close()


def main(params: Params, ctx: RunContext) -> None:
    n, producers, consumers = params["items"], params["producers"], params["consumers"]
    read_end, write_end = pipecore.Pipe(duplex=False, name="locked Pipe")
    send_lock, recv_lock = ctx.Lock(), ctx.Lock()
    queue = VisibleQueue(ctx)
    # Processes start one after another: without the barrier the first consumer could
    # take every item before the last one exists.
    start = ctx.Barrier(producers + consumers)
    sent = ctx.Barrier(producers + 1)
    workers = [
        ctx.Process(
            target=producer,
            args=(f"P{i}", write_end, send_lock, queue, n, (start, sent)),
            name=f"producer-{i}",
        )
        for i in range(producers)
    ]
    workers += [
        ctx.Process(
            target=consumer,
            args=(f"C{i}", read_end, recv_lock, queue, params["work"], start),
            name=f"consumer-{i}",
        )
        for i in range(consumers)
    ]
    for p in workers:
        p.start()
    read_end.close()
    sent.wait()  # every producer has sent all its items on the Pipe
    for _ in range(consumers):  # one stop signal per consumer on each channel
        write_end.send(None)
    write_end.close()
    for p in workers[:producers]:
        p.join(timeout=30)  # once the consumers have read what their Queue feeders held
    for _ in range(consumers):
        queue.put(None)
    for p in workers[producers:]:
        p.join(timeout=30)
    queue.close()
    queue.join_thread()


def _check(params: Params) -> None:
    items, producers = int(params["items"]), int(params["producers"])
    consumers, work = int(params["consumers"]), float(params["work"])
    seconds = 2 * items * producers * work / consumers  # every item, on both channels
    if seconds > WORK_SECONDS:
        raise ParamError(
            "items",
            f"items {items}, producers {producers}, consumers {consumers} and work {work:g} s "
            f"keep the consumers busy for {seconds:.0f} s on the Pipe and the Queue; at most "
            f"{WORK_SECONDS} s are allowed: fewer items, more consumers or less work",
        )


SCENARIO = Scenario(
    id="lock-queue",
    title={"en": "A Pipe plus a Lock is a Queue", "zh": "管道加锁就是队列"},
    teaching={
        "en": "Several producers and consumers can share a Pipe when a Lock guards each end. "
        "A consumer holds the lock only to receive and works on the item outside it, so the "
        "consumers take turns. That is what multiprocessing.Queue does inside: a one-way Pipe, "
        "a lock for readers, a lock for writers and a feeder thread. Here the Queue's own pipe "
        "is drawn as well.",
        "zh": "当每一端都有一把锁保护时，多个生产者和消费者可以共享一个管道。"
        "消费者只在接收时持有锁，在锁外处理条目，因此各消费者轮流取走条目。"
        "multiprocessing.Queue 内部正是这样做的：一个单向管道、读者锁、写者锁和一个送数线程。"
        "这里把队列自己的管道也画了出来。",
    },
    params=[
        Param(
            "items", "int", 10, {"en": "items per producer", "zh": "每个生产者的条目数"}, 1, 1000
        ),
        Param("producers", "int", 2, {"en": "producer processes", "zh": "生产者进程数"}, 1, 6),
        Param("consumers", "int", 2, {"en": "consumer processes", "zh": "消费者进程数"}, 1, 6),
        Param(
            "work",
            "float",
            0.01,
            {
                "en": "seconds a consumer works on each item, outside the lock (s)",
                "zh": "消费者在锁外处理每个条目的秒数（秒）",
            },
            0,
            0.1,
        ),
    ],
    main=main,
    module=__name__,
    processes=lambda params: int(params["producers"]) + int(params["consumers"]),
    check=_check,
)
