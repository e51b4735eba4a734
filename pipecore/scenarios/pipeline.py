"""pipeline: stages joined by one-way pipes; a None sentinel flows through and shuts each stage."""

from multiprocessing.connection import Connection

import pipecore
from pipecore.scenarios.catalogue import Param, Params, RunContext, Scenario


def source(out: Connection, count: int) -> None:
    for i in range(1, count + 1):
        out.send(i)
    out.send(None)  # the sentinel: no more work
    out.close()


def stage(number: int, inp: Connection, out: Connection) -> None:
    while (item := inp.recv()) is not None:
        out.send(item * 10 + number)  # each stage leaves its mark
    out.send(None)  # pass the sentinel on, then stop
    inp.close()
    out.close()


def sink(inp: Connection) -> None:
    while (item := inp.recv()) is not None:
        print(f"sink: {item}")
    print("sink: got the sentinel, pipeline drained")
    inp.close()


def main(params: Params, ctx: RunContext) -> None:
    stages = params["stages"]
    # One one-way pipe between each pair of neighbours: (reader, writer).
    pipes = [pipecore.Pipe(duplex=False, name=f"link {i}") for i in range(stages + 1)]
    workers = [ctx.Process(target=source, args=(pipes[0][1], params["items"]), name="source")]
    for i in range(stages):
        workers.append(
            ctx.Process(
                target=stage, args=(i + 1, pipes[i][0], pipes[i + 1][1]), name=f"stage-{i + 1}"
            )
        )
    workers.append(ctx.Process(target=sink, args=(pipes[stages][0],), name="sink"))
    for p in workers:
        p.start()
    for reader, writer in pipes:
        reader.close()
        writer.close()
    for p in workers:
        p.join(timeout=30)


SCENARIO = Scenario(
    id="pipeline",
    title={"en": "Pipeline with a sentinel", "zh": "带哨兵的流水线"},
    teaching={
        "en": "Each stage reads from the pipe behind it and writes to the pipe ahead of it, so "
        "work flows in order through all stages at once. A None sent after the last item "
        "travels the same way and tells each stage in turn to pass it on and stop.",
        "zh": "每个阶段从身后的管道读取、向前面的管道写入，工作按顺序同时流过所有阶段。"
        "最后一项之后发送的 None 沿同一路径传递，依次通知每个阶段把它传下去并结束。",
    },
    params=[
        Param("stages", "int", 3, {"en": "middle stages", "zh": "中间阶段数"}, 1, 12),
        Param("items", "int", 5, {"en": "items the source sends", "zh": "源发送的条目数"}, 1, 1000),
    ],
    main=main,
    module=__name__,
    processes=lambda params: int(params["stages"]) + 2,
)
