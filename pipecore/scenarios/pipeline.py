"""pipeline: stages joined by one-way pipes; a None sentinel flows through and shuts each stage."""

import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier

import pipecore
from pipecore.scenarios.catalogue import Param, ParamError, Params, RunContext, Scenario

FLOW_SECONDS = 30  # the longest the items may take to flow through the line


def source(out: Connection, count: int, pace: float, start: Barrier) -> None:
    start.wait()  # every stage and the sink are ready: only now does work flow
    for i in range(1, count + 1):
        out.send(i)
        time.sleep(pace)  # one item per beat, as fast as each stage works
    out.send(None)  # the sentinel: no more work
    out.close()


def stage(number: int, inp: Connection, out: Connection, pace: float, start: Barrier) -> None:
    start.wait()
    while (item := inp.recv()) is not None:
        time.sleep(pace)  # the stage's work on this item, while its neighbours do theirs
        out.send(item * 10 + number)  # each stage leaves its mark
    out.send(None)  # pass the sentinel on, then stop
    inp.close()
    out.close()


def sink(inp: Connection, start: Barrier) -> None:
    start.wait()
    while (item := inp.recv()) is not None:
        print(f"sink: {item}")
    print("sink: got the sentinel, pipeline drained")
    inp.close()


def main(params: Params, ctx: RunContext) -> None:
    stages, pace = params["stages"], params["pace"]
    # One one-way pipe between each pair of neighbours: (reader, writer).
    pipes = [pipecore.Pipe(duplex=False, name=f"link {i}") for i in range(stages + 1)]
    # Processes start one after another (a spawned one takes tens of ms): the barrier
    # holds the source until the whole line exists, so the items flow through it together.
    start = ctx.Barrier(stages + 2)
    workers = [
        ctx.Process(target=source, args=(pipes[0][1], params["items"], pace, start), name="source")
    ]
    for i in range(stages):
        workers.append(
            ctx.Process(
                target=stage,
                args=(i + 1, pipes[i][0], pipes[i + 1][1], pace, start),
                name=f"stage-{i + 1}",
            )
        )
    workers.append(ctx.Process(target=sink, args=(pipes[stages][0], start), name="sink"))
    for p in workers:
        p.start()
    for reader, writer in pipes:
        reader.close()
        writer.close()
    for p in workers:
        p.join(timeout=30)


def _check(params: Params) -> None:
    items, stages, pace = int(params["items"]), int(params["stages"]), float(params["pace"])
    seconds = (items + stages + 1) * pace  # a beat for each item, each stage and the sentinel
    if seconds > FLOW_SECONDS:
        raise ParamError(
            "items",
            f"items {items}, stages {stages} and pace {pace:g} s take {seconds:.0f} s to flow "
            f"through; at most {FLOW_SECONDS} s are allowed: fewer items or a shorter pace",
        )


SCENARIO = Scenario(
    id="pipeline",
    title={"en": "Pipeline with a sentinel", "zh": "带哨兵的流水线"},
    teaching={
        "en": "Each stage reads from the pipe behind it and writes to the pipe ahead of it, so "
        "work flows in order through all stages at once: while one stage works on an item, the "
        "stage behind it already works on the next. A None sent after the last item travels "
        "the same way and tells each stage in turn to pass it on and stop.",
        "zh": "每个阶段从身后的管道读取、向前面的管道写入，工作按顺序同时流过所有阶段："
        "一个阶段处理某一项时，它身后的阶段已经在处理下一项。"
        "最后一项之后发送的 None 沿同一路径传递，依次通知每个阶段把它传下去并结束。",
    },
    params=[
        Param("stages", "int", 3, {"en": "middle stages", "zh": "中间阶段数"}, 1, 12),
        Param("items", "int", 5, {"en": "items the source sends", "zh": "源发送的条目数"}, 1, 1000),
        Param(
            "pace",
            "float",
            0.02,
            {
                "en": "seconds between the source's items, and each stage's work on one (s)",
                "zh": "源发送条目的间隔，也是每个阶段处理一项的时间（秒）",
            },
            0,
            0.5,
        ),
    ],
    main=main,
    module=__name__,
    processes=lambda params: int(params["stages"]) + 2,
    check=_check,
)
