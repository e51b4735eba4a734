"""The classic two-process exchange over a duplex Pipe.

Run it plain (`python examples/pingpong.py [spawn|forkserver|fork]`) or traced
(`pipescope trace -- python examples/pingpong.py`): the output is the same.
"""

import multiprocessing
import sys
from multiprocessing import Pipe, Process


def proc1(conn):
    conn.send("proc1")
    msg = conn.recv()
    print(f"进程proc1({multiprocessing.current_process()})收到 {msg}", flush=True)


def proc2(conn):
    msg = conn.recv()
    print(f"进程proc2({multiprocessing.current_process()})收到 {msg}", flush=True)
    conn.send("proc2")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        multiprocessing.set_start_method(sys.argv[1])
    left, right = Pipe()
    p1 = Process(target=proc1, args=(left,))
    p2 = Process(target=proc2, args=(right,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
