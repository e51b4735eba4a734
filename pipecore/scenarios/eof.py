"""eof: closing an end gives the peer EOFError or BrokenPipeError; so does a worker being killed."""

import os
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def talker(conn: Connection, messages: int) -> None:
    for i in range(messages):
        conn.send(f"line {i}")
    conn.close()  # the peer's next recv after these messages raises EOFError


def listener(conn: Connection, other: Connection) -> None:
    other.close()  # a forked child inherits the other end too: close that copy
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            print("listener: recv raised EOFError: every copy of the other end is closed")
            break
        print(f"listener: got {msg!r}")
    conn.close()


def quitter(conn: Connection) -> None:
    conn.recv()  # take one message, then leave
    conn.close()


def sender(conn: Connection, other: Connection) -> None:
    other.close()
    conn.send("are you there?")
    conn.poll(5)  # returns when the peer closes: its end reads as end of file
    try:
        conn.send("still there?")
    except BrokenPipeError as exc:
        print(f"sender: send raised BrokenPipeError: {exc}")
    conn.close()


def chatter(conn: Connection, talking: Event) -> None:
    i = 0
    while True:  # talks until it is killed
        conn.send(f"chat {i}")
        talking.set()
        i += 1
        time.sleep(0.05)


def main(params: Params, ctx: RunContext) -> None:
    # 1. The talker closes its end: the listener reads the queued messages, then EOFError.
    a, b = pipecore.Pipe(name="close → EOFError")
    t = ctx.Process(target=talker, args=(a, params["messages"]), name="talker")
    lis = ctx.Process(target=listener, args=(b, a), name="listener")
    t.start()
    lis.start()
    a.close()  # without this, main's copy would keep the pipe open and recv would block
    b.close()
    t.join(timeout=10)
    lis.join(timeout=10)

    # 2. The quitter closes its end: sending to it raises BrokenPipeError.
    a, b = pipecore.Pipe(name="send to closed → BrokenPipeError")
    q = ctx.Process(target=quitter, args=(a,), name="quitter")
    s = ctx.Process(target=sender, args=(b, a), name="sender")
    q.start()
    s.start()
    a.close()
    b.close()
    q.join(timeout=10)
    s.join(timeout=10)

    # 3. A worker is killed mid-conversation: its end closes with it, and the peer
    #    sees EOFError after the messages already in the pipe.
    a, b = pipecore.Pipe(name="killed → EOFError")
    talking = ctx.Event()
    c = ctx.Process(target=chatter, args=(a, talking), name="chatter")
    lis = ctx.Process(target=listener, args=(b, a), name="listener-2")
    c.start()
    lis.start()
    a.close()
    b.close()
    talking.wait(timeout=10)  # mid-conversation: after its first message
    time.sleep(params["kill_after"])
    assert c.pid is not None
    os.kill(c.pid, signal.SIGKILL)
    c.join(timeout=10)
    print(f"main: chatter killed, exit code {c.exitcode}")
    lis.join(timeout=10)


SCENARIO = Scenario(
    id="eof",
    title={"en": "EOF and broken pipes", "zh": "EOF 与断开的管道"},
    teaching={
        "en": "When every copy of one end is closed, the peer first receives what is still in "
        "the pipe, then recv raises EOFError, and send raises BrokenPipeError. A process that "
        "is killed closes its ends too. Each process must close the copies it does not use, "
        "or the pipe never reaches end of file.",
        "zh": "当一端的所有副本都关闭后，对端先收完管道中剩余的数据，然后 recv 抛出 EOFError，"
        "send 抛出 BrokenPipeError。被杀死的进程同样会关闭它的各端。每个进程都必须关闭自己"
        "不用的副本，否则管道永远不会到达文件末尾。",
    },
    params=[
        Param(
            "messages",
            "int",
            3,
            {"en": "messages before the close", "zh": "关闭前的消息数"},
            0,
            100,
        ),
        Param(
            "kill_after",
            "float",
            0.5,
            {"en": "seconds of chatter before it is killed", "zh": "chatter 说话多少秒后被杀死"},
            0.05,
            10.0,
        ),
    ],
    main=main,
    module=__name__,
    processes=lambda params: 6,
)
