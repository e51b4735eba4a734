"""big-payload: bytes up to tens of MiB, and an unpicklable object refused before the pipe."""

import platform
import time
from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario

MiB = 1 << 20


def payload_sizes(max_mib: int) -> list[int]:
    sizes = [1, 1024, MiB]
    mib = 8
    while mib < max_mib:
        sizes.append(mib * MiB)
        mib *= 2
    sizes.append(max_mib * MiB)
    return sorted(set(sizes))


def sender(conn: Connection, max_mib: int) -> None:
    for size in payload_sizes(max_mib):
        started = time.monotonic()
        conn.send(b"\x00" * size)
        print(f"sender: sent {size} bytes in {time.monotonic() - started:.3f} s")
    try:
        conn.send(lambda x: x)  # pickling fails here, before any byte is written
    except Exception as exc:
        print(f"sender: send(lambda) failed: {type(exc).__name__}: {exc}")
    conn.send("done")
    conn.close()


def receiver(conn: Connection) -> None:
    largest = damaged = 0
    while (msg := conn.recv()) != "done":
        size = len(msg)
        intact = msg.count(0) == size
        state = "intact" if intact else "DAMAGED"
        print(f"receiver: {size:>10} bytes ({size / MiB:.3f} MiB) arrived {state}")
        largest = max(largest, size) if intact else largest
        damaged += not intact
    print("receiver: the next message after the failed send is 'done': nothing half-sent")
    # What the documentation's ~32 MiB warning means here, from what this run saw.
    here = f"on {platform.system()} with Python {platform.python_version()}"
    if damaged:
        print(f"receiver: {here}, {damaged} frames arrived damaged")
    else:
        print(
            f"receiver: {here}, every frame up to {largest / MiB:.0f} MiB arrived intact: "
            "the ~32 MiB warning did not apply (a frame under 2 GiB carries a 4-byte length "
            "header, a larger one an 8-byte header)"
        )
    conn.close()


def main(params: Params, ctx: RunContext) -> None:
    a, b = pipecore.Pipe(name="big-payload")
    s = ctx.Process(target=sender, args=(a, params["max_mib"]), name="sender")
    r = ctx.Process(target=receiver, args=(b,), name="receiver")
    s.start()
    r.start()
    a.close()
    b.close()
    s.join(timeout=60)
    r.join(timeout=60)


SCENARIO = Scenario(
    id="big-payload",
    title={"en": "Big payloads and unpicklable objects", "zh": "大消息与不可 pickle 的对象"},
    teaching={
        "en": "The documentation warns that very large pickles (about 32 MiB+, depending on "
        "the OS) may raise ValueError. On Linux with Python 3.8 or newer a Connection sends "
        "any frame below 2 GiB with a 4-byte header and larger ones with an 8-byte header, so "
        "tens of MiB arrive intact, only slower: the receiver's last line says what this run "
        "found. An object that cannot be pickled fails inside send, before any byte enters "
        "the pipe.",
        "zh": "文档提醒：非常大的 pickle（约 32 MiB 以上，取决于操作系统）可能引发 ValueError。"
        "在 Linux 与 Python 3.8 及更新版本上，Connection 用 4 字节头发送 2 GiB 以下的帧，"
        "更大的帧用 8 字节头，所以几十 MiB 的数据也能完整到达，只是更慢："
        "接收者的最后一行说明本次运行的结果。"
        "不能被 pickle 的对象会在 send 内部失败，没有任何字节进入管道。",
    },
    params=[
        Param(
            "max_mib",
            "int",
            48,
            {"en": "largest payload (MiB)", "zh": "最大消息（MiB）"},
            1,
            64,
        ),
    ],
    main=main,
    module=__name__,
)
