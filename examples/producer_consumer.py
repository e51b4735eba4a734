"""Two producers share one end of a Pipe; a Lock keeps their messages whole.

`python examples/producer_consumer.py [spawn|forkserver|fork]`
"""

import multiprocessing
import sys

ITEMS = 5


def produce(name, conn, lock):
    for i in range(ITEMS):
        with lock:  # one writer at a time on the shared end
            conn.send(f"{name}-{i}")


def consume(conn, total):
    got = [conn.recv() for _ in range(total)]
    print("consumed", len(got), "items:", " ".join(sorted(got)), flush=True)


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1] if len(sys.argv) > 1 else None)
    reader, writer = ctx.Pipe(duplex=False)
    lock = ctx.Lock()
    producers = [ctx.Process(target=produce, args=(n, writer, lock)) for n in ("A", "B")]
    consumer = ctx.Process(target=consume, args=(reader, ITEMS * len(producers)))
    for p in [*producers, consumer]:
        p.start()
    for p in [*producers, consumer]:
        p.join()
    sys.exit(consumer.exitcode)
