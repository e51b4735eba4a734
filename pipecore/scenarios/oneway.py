"""one-way: Pipe(duplex=False) has a reader end and a writer end; each refuses the other's job."""

from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def writer(conn: Connection, messages: int) -> None:
    for i in range(messages):
        conn.send(f"message {i}")
    try:
        conn.recv()  # the writer end cannot read
    except OSError as exc:
        print(f"writer: recv on the writer end failed: OSError: {exc}")
    conn.send(None)
    conn.close()


def reader(conn: Connection) -> None:
    try:
        conn.send("hello?")  # the reader end cannot write
    except OSError as exc:
        print(f"reader: send on the reader end failed: OSError: {exc}")
    while (msg := conn.recv()) is not None:
        print(f"reader: got {msg!r}")
    conn.close()


def main(params: Params, ctx: RunContext) -> None:
    # As in the standard library, the first end is the reader, the second the writer.
    read_end, write_end = pipecore.Pipe(duplex=False, name="one-way")
    r = ctx.Process(target=reader, args=(read_end,), name="reader")
    w = ctx.Process(target=writer, args=(write_end, params["messages"]), name="writer")
    r.start()
    w.start()
    read_end.close()
    write_end.close()
    w.join(timeout=10)
    r.join(timeout=10)


SCENARIO = Scenario(
    id="one-way",
    title={"en": "One-way Pipe: a reader and a writer", "zh": "单向管道：读端与写端"},
    teaching={
        "en": "Pipe(duplex=False) is an os.pipe: the first end can only recv, the second can "
        "only send. Sending on the reader or receiving on the writer raises OSError at once; "
        "nothing enters the pipe.",
        "zh": "Pipe(duplex=False) 底层是 os.pipe：第一端只能 recv，第二端只能 send。"
        "在读端发送或在写端接收会立即抛出 OSError，管道中不会多出任何数据。",
    },
    params=[
        Param(
            "messages",
            "int",
            3,
            {"en": "messages the writer sends", "zh": "写端发送的消息数"},
            1,
            1000,
        ),
    ],
    main=main,
    module=__name__,
)
