"""Three stages joined by one-way pipes; None is the sentinel that shuts it down.

`python examples/pipeline.py [spawn|forkserver|fork]`; exits with status 3 to show
that a traced program's exit status passes through.
"""

import multiprocessing
import sys


def square(inbox, outbox):
    while (n := inbox.recv()) is not None:
        outbox.send(n * n)
    outbox.send(None)


def total(inbox, result):
    acc = 0
    while (n := inbox.recv()) is not None:
        acc += n
    result.send(acc)


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1] if len(sys.argv) > 1 else None)
    a_in, a_out = ctx.Pipe(duplex=False)
    b_in, b_out = ctx.Pipe(duplex=False)
    r_in, r_out = ctx.Pipe(duplex=False)
    stages = [
        ctx.Process(target=square, args=(a_in, b_out)),
        ctx.Process(target=total, args=(b_in, r_out)),
    ]
    for stage in stages:
        stage.start()
    for n in range(1, 6):
        a_out.send(n)
    a_out.send(None)
    print("sum of squares 1..5 =", r_in.recv(), flush=True)
    for stage in stages:
        stage.join()
    sys.exit(3)
