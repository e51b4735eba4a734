"""deadlock: both ends recv first, or both send more than the pipe holds; neither can go on."""

from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def polite(conn: Connection, name: str) -> None:
    msg = conn.recv()  # waits for the other side to speak first; so does the other side
    conn.send(f"{name} answers {msg!r}")


def talkative(conn: Connection, name: str, size: int) -> None:
    # More bytes than the socket buffers hold: send blocks until the peer reads,
    # but the peer is sending too and reads only afterwards.
    conn.send_bytes(name.encode() * (size // len(name)))
    conn.recv_bytes()


def main(params: Params, ctx: RunContext) -> None:
    a, b = pipecore.Pipe(name=params["variant"])
    if params["variant"] == "recv-recv":
        p1 = ctx.Process(target=polite, args=(a, "left"), name="left")
        p2 = ctx.Process(target=polite, args=(b, "right"), name="right")
    else:
        size = params["size"]
        p1 = ctx.Process(target=talkative, args=(a, "left", size), name="left")
        p2 = ctx.Process(target=talkative, args=(b, "right", size), name="right")
    p1.start()
    p2.start()
    a.close()
    b.close()
    # Nothing here ends the wait: PipeScope sees every end blocked and stops the run.
    p1.join()
    p2.join()


SCENARIO = Scenario(
    id="deadlock",
    title={"en": "Deadlock", "zh": "死锁"},
    teaching={
        "en": "recv blocks until a frame arrives and send blocks while the buffer is full. If "
        "both ends recv first, each waits for the other for ever. If both send more than the "
        "kernel buffers hold before reading, each waits for the other to read. Every end is "
        "blocked and nothing can move: a deadlock, which PipeScope detects and stops.",
        "zh": "recv 会阻塞直到有帧到达，缓冲区满时 send 也会阻塞。如果两端都先 recv，"
        "双方会永远等待对方；如果两端都在读取前发送超过内核缓冲区容量的数据，"
        "双方都在等对方读取。所有端都被阻塞、无法前进：这就是死锁，PipeScope 会检测到并停止运行。",
    },
    params=[
        Param(
            "variant",
            "choice",
            "recv-recv",
            {"en": "both recv first, or both send first", "zh": "两端都先接收，或都先发送"},
            choices=("recv-recv", "send-send"),
        ),
        Param(
            "size",
            "int",
            1 << 20,
            {"en": "bytes each side sends (send-send)", "zh": "每端发送的字节数（send-send）"},
            1 << 19,
            16 << 20,
        ),
    ],
    main=main,
    module=__name__,
)
