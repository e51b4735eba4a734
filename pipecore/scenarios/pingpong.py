"""ping-pong: the classic two-process exchange over one duplex Pipe."""

import multiprocessing
from multiprocessing import Process
from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Params, RunContext, Scenario


def proc1(pipe: Connection) -> None:
    pipe.send("proc1")
    msg = pipe.recv()
    print(f"进程proc1({multiprocessing.current_process()})收到 {msg}")


def proc2(pipe: Connection) -> None:
    msg = pipe.recv()
    print(f"进程proc2({multiprocessing.current_process()})收到 {msg}")
    pipe.send("proc2")


def main(params: Params, ctx: RunContext) -> None:
    # The classic program uses multiprocessing.Process; the run has already made the
    # chosen start method the default, so this is the same as ctx.Process.
    pipe1, pipe2 = pipecore.Pipe(name="ping-pong")
    p1 = Process(target=proc1, args=(pipe1,))
    p2 = Process(target=proc2, args=(pipe2,))
    p1.start()
    p2.start()
    # The children hold their own copies of the ends now.
    pipe1.close()
    pipe2.close()
    p1.join(timeout=10)
    p2.join(timeout=10)


SCENARIO = Scenario(
    id="ping-pong",
    title={"en": "Ping-pong over a duplex Pipe", "zh": "双向管道上的乒乓通信"},
    teaching={
        "en": "Pipe() returns two connection ends; each end can both send and recv. "
        "proc1 sends first and then waits; proc2 waits, prints what arrived and answers. "
        "Each message leaves one end and arrives, whole and in order, at the other.",
        "zh": "Pipe() 返回两个连接端，每一端都可以 send 和 recv。proc1 先发送再等待；"
        "proc2 先等待，打印收到的内容后回复。每条消息从一端发出，完整且按顺序到达另一端。",
    },
    params=[],
    main=main,
    module=__name__,
)
