"""bytes: send_bytes(offset, size), recv_bytes(maxlength), recv_bytes_into, BufferTooShort."""

from multiprocessing import BufferTooShort
from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def sender(conn: Connection, long_size: int) -> None:
    data = b"0123456789abcdef"
    conn.send_bytes(data)  # the whole buffer: 16 bytes
    conn.send_bytes(data, 10)  # from offset 10 to the end: b"abcdef"
    conn.send_bytes(data, 2, 4)  # 4 bytes from offset 2: b"2345"
    conn.send_bytes(b"fits")  # read into a large enough buffer
    conn.send_bytes(b"does not fit into 8 bytes")  # read into a buffer too short
    conn.send_bytes(b"x" * long_size)  # longer than the reader's maxlength
    conn.close()


def receiver(conn: Connection, maxlength: int) -> None:
    print("recv_bytes():", conn.recv_bytes())
    print("recv_bytes():", conn.recv_bytes())
    print("recv_bytes():", conn.recv_bytes())

    buffer = bytearray(16)
    size = conn.recv_bytes_into(buffer, 4)  # write the frame at offset 4
    print(f"recv_bytes_into(buffer, 4) -> {size}, buffer = {bytes(buffer)!r}")

    small = bytearray(8)
    try:
        conn.recv_bytes_into(small)
    except BufferTooShort as exc:
        # The frame was read completely; the whole message is in the exception.
        print(f"BufferTooShort: the message is in e.args[0]: {exc.args[0]!r}")

    try:
        conn.recv_bytes(maxlength)
    except OSError as exc:
        # The frame stays unread in the pipe, so this end can no longer be read from.
        print(f"recv_bytes({maxlength}) on a longer frame: OSError: {exc}")
    conn.close()


def main(params: Params, ctx: RunContext) -> None:
    a, b = pipecore.Pipe(name="bytes")
    s = ctx.Process(target=sender, args=(a, params["long_size"]), name="sender")
    r = ctx.Process(target=receiver, args=(b, params["maxlength"]), name="receiver")
    s.start()
    r.start()
    a.close()
    b.close()
    r.join(timeout=10)
    s.join(timeout=10)


def _check(params: Params) -> None:
    from pipecore.scenarios.catalogue import ParamError

    if params["long_size"] <= params["maxlength"]:
        raise ParamError(
            "long_size",
            f"long_size must be greater than maxlength ({params['maxlength']}) to show the "
            f"over-long frame, got {params['long_size']}",
        )


SCENARIO = Scenario(
    id="bytes",
    title={"en": "The byte methods", "zh": "字节方法"},
    teaching={
        "en": "send_bytes sends a slice of a buffer (offset, size) as one frame without "
        "pickling. recv_bytes(maxlength) refuses a longer frame with OSError and leaves the "
        "end unusable; recv_bytes_into writes the frame into your buffer at an offset and "
        "raises BufferTooShort, carrying the message, when it does not fit.",
        "zh": "send_bytes 把缓冲区的一段（offset, size）不经 pickle 作为一帧发送。"
        "recv_bytes(maxlength) 遇到更长的帧会抛出 OSError，之后这一端不能再读；"
        "recv_bytes_into 把帧写入你的缓冲区的指定偏移处，放不下时抛出 BufferTooShort，"
        "异常里带着完整的消息。",
    },
    params=[
        Param(
            "maxlength",
            "int",
            64,
            {
                "en": "maxlength given to the last recv_bytes",
                "zh": "最后一次 recv_bytes 的 maxlength",
            },
            1,
            1 << 20,
        ),
        Param(
            "long_size",
            "int",
            100,
            {"en": "size of the over-long frame in bytes", "zh": "超长帧的字节数"},
            2,
            1 << 20,
        ),
    ],
    main=main,
    module=__name__,
    check=_check,
)
