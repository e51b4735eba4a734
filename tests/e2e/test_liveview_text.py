"""What the live view says in chromium: token details, outcomes, verdicts, labels, banners."""

import pickle
from typing import Any

import pytest

from tests.e2e.liveview import call, pipe_event

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e


DESCRIBE = """async (token) => {
  const { describeToken } = await import('/static/js/tokendetail.js');
  return describeToken(token);
}"""


def test_token_detail_decodes_a_real_pickle_head(lv_page: Any) -> None:
    head = pickle.dumps("proc1", protocol=5)
    token = {"head": head.hex(), "nbytes": len(head), "op": "send", "preview": "'proc1'"}
    detail = lv_page.evaluate(DESCRIBE, token)
    assert [op["name"] for op in detail["opcodes"]] == [
        "PROTO",
        "FRAME",
        "SHORT_BINUNICODE",
        "MEMOIZE",
        "STOP",
    ]
    assert detail["opcodes"][2]["arg"] == "proc1"
    assert (detail["protocol"], detail["complete"], detail["size"]) == (5, True, len(head))
    assert detail["hex"].split(" ")[:2] == ["80", "05"]


def test_token_detail_stops_cleanly_where_the_head_ends(lv_page: Any) -> None:
    data = pickle.dumps({"job": 7, "blob": "x" * 500, "ok": True}, protocol=5)
    framed = len(data).to_bytes(4, "big") + data  # a head that kept the length prefix
    detail = lv_page.evaluate(DESCRIBE, {"head": framed[:64].hex(), "nbytes": len(data)})
    names = [op["name"] for op in detail["opcodes"]]
    assert names[:4] == ["PROTO", "FRAME", "EMPTY_DICT", "MEMOIZE"]
    assert detail["complete"] is False
    last = detail["opcodes"][-1]
    assert last["name"] == "BINUNICODE" and last["truncated"] is True and last["length"] == 500


OUTCOME = """async ({ reason, message, lang }) => {
  const { createI18n } = await import('/static/js/i18n.js');
  const { outcomeText } = await import('/static/js/i18n_run.js');
  const i18n = createI18n(lang);
  return outcomeText(reason, message, (k, v) => i18n.t(k, v));
}"""


@pytest.mark.parametrize(
    ("reason", "lang", "expected"),
    [
        ({"key": "completed", "args": {}}, "zh", "场景已运行完毕"),
        ({"key": "timeout", "args": {"limit": 30}}, "zh", "运行超过了 30 秒的时间限制"),
        (
            {
                "key": "worker_killed",
                "args": {"process": "Process-1", "pid": 7, "signal": "SIGKILL", "code": 1},
            },
            "en",
            "Process-1 (pid 7) was killed by SIGKILL; the main process exited with 1",
        ),
        (  # a process that vanished: no signal is known
            {
                "key": "worker_killed",
                "args": {"process": "chatter", "pid": 7, "signal": "", "code": 0},
            },
            "zh",
            "chatter（pid 7）被终止；主进程以退出码 0 退出",
        ),
        ({"key": "exit_code", "args": {"code": 2, "stderr": ""}}, "zh", "主进程以退出码 2 退出"),
        (
            {"key": "exit_code", "args": {"code": 2, "stderr": "boom"}},
            "en",
            "the main process exited with code 2: boom",
        ),
        ({"key": "no_such_outcome", "args": {}}, "zh", "the server's words"),
        ({"key": "main_killed", "args": {}}, "zh", "the server's words"),
        (None, "zh", "the server's words"),
    ],
)
def test_an_outcome_is_told_in_the_page_language_or_in_the_server_words(
    lv_page: Any, reason: Any, lang: str, expected: str
) -> None:
    args = {"reason": reason, "message": "the server's words", "lang": lang}
    assert lv_page.evaluate(OUTCOME, args) == expected


VERDICT = """async ({ verdicts, lang }) => {
  const { createI18n } = await import('/static/js/i18n.js');
  const { verdictText, verdictCounts } = await import('/static/js/i18n_verdicts.js');
  const i18n = createI18n(lang);
  const t = (k, v) => i18n.t(k, v);
  return { lines: verdicts.map((v) => verdictText(v, t)), counts: verdictCounts(verdicts, t) };
}"""


def _verdicts_of_a_stream() -> list[dict[str, Any]]:
    """Real verdicts of the analysis: killed with and without a signal, an EOF, corrupt
    frames (a mismatch, a raced one, a frame nobody sent)."""
    from pipecore.analysis import Analysis
    from tests.unit.eventstream import Stream

    s, an = Stream(), Analysis("r1")
    s.pipe()
    s.add(100, 12, "process", op="exit", exitcode=-9)
    s.add(102, 10, "process", op="exit", exitcode=None, killed=True)
    s.send(110, 11, "a", "11111111", 10)
    s.call(120, 12, "b", "recv_bytes", "end", nbytes=9)
    s.call(130, 12, "b", "recv", "error", error_type="UnpicklingError", error="invalid load key")
    s.call(200, 11, "a", "send", "begin")
    s.call(210, 11, "a", "send", "error", error_type="BrokenPipeError", error="[Errno 32]")
    verdicts = s.feed(an)
    assert [v["verdict"] for v in verdicts] == ["killed", "killed", "corrupt", "corrupt", "eof"]
    return verdicts


def test_verdicts_are_told_in_the_page_language(lv_page: Any) -> None:
    verdicts = _verdicts_of_a_stream()
    english = lv_page.evaluate(VERDICT, {"verdicts": verdicts, "lang": "en"})
    # The page's English is the server's own sentence, word for word.
    assert english["lines"] == [v["message"] for v in verdicts]
    assert english["counts"] == "killed ×2 · corrupt ×2 · eof"
    chinese = lv_page.evaluate(VERDICT, {"verdicts": verdicts, "lang": "zh"})
    assert chinese["lines"] == [
        "Process-2（pid 12）被信号 9（SIGKILL）终止",
        "MainProcess（pid 10）被终止",
        "管道 p1 a>b 上的损坏帧：应为 Process-1 seq 5（哈希 11111111，10 字节），"
        "收到 Process-2 seq 6（哈希 ?，9 字节）",
        "管道 p1 a>b 上的损坏帧：收到 Process-2 seq 7（UnpicklingError: invalid load key），"
        "但没有帧发往 b 端",
        "Process-1 在管道 p1 的 a 端调用 send 时得到 BrokenPipeError："
        "没有人能再接收，另一端的所有副本都已关闭",
    ]
    assert chinese["counts"] == "被终止 ×2 · 损坏 ×2 · 文件结束"
    # A verdict without a reason (a record made before reasons) keeps the server's words.
    old = {"verdict": "killed", "message": "the server's words"}
    assert lv_page.evaluate(VERDICT, {"verdicts": [old], "lang": "zh"})["lines"] == [
        "the server's words"
    ]


TRANSLATED = """async () => {
  const tables = [
    ['i18n_text.js', 'MESSAGES'], ['i18n_run.js', 'RUN_MESSAGES'],
    ['i18n_records.js', 'RECORDS_MESSAGES'], ['i18n_verdicts.js', 'VERDICT_MESSAGES'],
    ['i18n_stats.js', 'STATS_MESSAGES'],
  ];
  const missing = {};
  for (const [file, name] of tables) {
    const table = (await import(`/static/js/${file}`))[name];
    const en = Object.keys(table.en);
    const zh = Object.keys(table.zh);
    missing[file] = [...en.filter((k) => !zh.includes(k)), ...zh.filter((k) => !en.includes(k))];
  }
  const live = await import('/static/js/liveview_text.js');
  missing['liveview_text.js'] = Object.keys(live.LIVEVIEW_TEXT)
    .filter((k) => !(k in live.LIVEVIEW_TEXT_ZH));
  return missing;
}"""


def test_every_label_has_its_chinese(lv_page: Any) -> None:
    missing = lv_page.evaluate(TRANSLATED)
    assert missing == {file: [] for file in missing}, missing
    assert len(missing) == 6


STATUS = """async ({ proc, teardownT }) => {
  const { statusLine } = await import('/static/js/render_process.js');
  return statusLine(proc, (k) => k, 0, teardownT)[0];
}"""


@pytest.mark.parametrize(
    ("proc", "teardown_t", "expected"),
    [
        # Killed by the stop's teardown (its exit after the teardown began): no finding.
        ({"exited": True, "killed": True, "exitcode": -15, "exitT": 300}, 200, "ended_by_run"),
        # Killed while the run went on: a finding, with its signal.
        ({"exited": True, "killed": True, "exitcode": -9, "exitT": 100}, 200, "killed (signal 9)"),
        ({"exited": True, "killed": True, "exitcode": None, "exitT": 100}, None, "killed"),
        ({"exited": True, "killed": False, "exitcode": 0, "exitT": 300}, 200, "exited (0)"),
    ],
)
def test_a_process_box_tells_a_kill_from_the_runs_own_end(
    lv_page: Any, proc: dict[str, Any], teardown_t: int | None, expected: str
) -> None:
    assert lv_page.evaluate(STATUS, {"proc": proc, "teardownT": teardown_t}) == expected


GAUGE_LABEL = """async ({ events, lang, rooms }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { gaugeOf } = await import('/static/js/model_lanes.js');
  const { gaugeLabel, gaugeText } = await import('/static/js/render_gauge.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const { withDefaults } = await import('/static/js/liveview_text.js');
  const model = createRunModel();
  model.apply(events);
  const pipe = model.state.pipes['1.1'];
  const gauge = gaugeOf(pipe, pipe.lanes['a>b'] ? 'a>b' : 'b>a');
  const t = withDefaults(createI18n(lang).t);
  if (!rooms) return gaugeLabel(gauge, t);
  // The label drawn in a lane `room` pixels long, in the live view's font.
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = '10px system-ui, sans-serif';
  return rooms.map((room) => gaugeText(ctx, gauge, t, room));
}"""


def test_the_gauge_of_a_waiting_send_counts_the_part_of_its_frame_in_the_buffer(
    lv_page: Any,
) -> None:
    """A writer waits in send only once the kernel buffer is full: a step-mode hold comes
    before its `begin`. With no frame sent before it, its own frame fills the buffer, which
    `queued` (frames whose send returned) does not count: the label says so, not
    "queued 0 B" beside a full gauge."""
    pipe = pipe_event(duplex=False, capacity=65_536, transport="os.pipe")
    waiting = call(2, 2, "b", "send_bytes", phase="begin")

    def label(events: list[dict[str, Any]], lang: str = "en") -> str:
        said: str = lv_page.evaluate(GAUGE_LABEL, {"events": events, "lang": lang})
        return said

    assert label([pipe, waiting]) == "64 KiB full of the frame being sent"
    assert label([pipe, waiting], "zh") == "64 KiB 已满：正在发送的帧"
    sent = [call(2 + n, 2, "b", "send_bytes", nbytes=1024) for n in range(3)]
    assert label([pipe, *sent]) == "queued 3.0 KiB / 64 KiB"
    assert label([pipe, *sent, call(5, 2, "b", "send_bytes", phase="begin")]) == (
        "64 KiB full: 3.0 KiB queued + the frame being sent"
    )
    # Frames already sent that fill the buffer: the waiting one has no part in it.
    full = [call(2 + n, 2, "b", "send_bytes", nbytes=16_384) for n in range(4)]
    assert label([pipe, *full, call(6, 2, "b", "send_bytes", phase="begin")]) == (
        "queued 64 KiB / 64 KiB · full: send waits"
    )


THREAD_ROWS = """async (events) => {
  const { describeEvent } = await import('/static/js/eventlog.js');
  return events.map((event) => describeEvent(event, 0).slice(4));
}"""


def test_the_event_log_says_how_many_threads_are_queue_feeders(lv_page: Any) -> None:
    event = {"run": "r1", "seq": 5, "kind": "thread", "t": 0, "pid": 7, "process": "left"}
    rows = lv_page.evaluate(
        THREAD_ROWS,
        [
            event | {"op": "start", "threads": 2, "helpers": 1},
            event | {"op": "start", "threads": 4, "helpers": 2},
            event | {"op": "end", "threads": 1, "helpers": 0},
            event | {"op": "end", "threads": 1},  # a stream from before the field
        ],
    )
    assert rows == [
        ["thread start", "2 threads: 1 Queue feeder"],
        ["thread start", "4 threads: 2 Queue feeders"],
        ["thread end", "1 thread"],
        ["thread end", "1 thread"],
    ]


def test_a_short_lane_says_the_gauge_in_its_short_form_not_cut_off(lv_page: Any) -> None:
    pipe = pipe_event(duplex=False, capacity=65_536, transport="os.pipe")
    sent = [call(2 + n, 2, "b", "send_bytes", nbytes=16_384) for n in range(3)]
    waiting = call(5, 2, "b", "send_bytes", phase="begin")
    # The back-pressure scenario at 1366 x 768: three 16 KiB frames queued, the fourth's
    # send waits with part of its frame in the buffer.
    # A laptop's two-process lane is about 200 px long; a wide window's, 500.
    rooms = [500, 200, 90]

    def texts(events: list[dict[str, Any]], lang: str = "en") -> list[str]:
        said: list[str] = lv_page.evaluate(
            GAUGE_LABEL, {"events": events, "lang": lang, "rooms": rooms}
        )
        return said

    assert texts([pipe, *sent, waiting]) == [
        "64 KiB full: 48 KiB queued + the frame being sent",
        "64 KiB full: send waits",
        "64 KiB full: send waits",
    ]
    assert texts([pipe, *sent, waiting], "zh")[2] == "64 KiB 已满：send 等待"
    # A label that fits stays whole; a shorter one drops its words, not its figures.
    assert texts([pipe, *sent]) == ["queued 48 KiB / 64 KiB"] * 2 + ["48 KiB / 64 KiB"]


DEADLOCK_TEXT = """async ({ events, lang }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { bannersFor } = await import('/static/js/banner.js');
  const { deadlockText } = await import('/static/js/i18n_verdicts.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const { withDefaults } = await import('/static/js/liveview_text.js');
  const model = createRunModel();
  model.apply(events);
  const t = createI18n(lang).t;
  const banner = bannersFor(model.state, t).find((b) => b.kind === 'deadlock');
  // What the live view draws: its lookup passes no arguments on (and knows no text without
  // the page's); a wide canvas, so the bar is not cut short.
  const { drawDeadlock } = await import('/static/js/render_process.js');
  const ctx = document.createElement('canvas').getContext('2d');
  const drawn = [];
  ctx.fillText = (text) => drawn.push(text);
  drawDeadlock(ctx, 3000, 400, model.state.deadlock, withDefaults(t), 0);
  return { drawn, bar: deadlockText(model.state.deadlock, withDefaults(t)), lines: banner.lines,
    bare: deadlockText(model.state.deadlock, withDefaults(null)) };
}"""


def test_the_deadlock_bar_says_who_waits_in_the_page_language(lv_page: Any) -> None:
    pipe = pipe_event(duplex=True, capacity=212_992, name="recv-recv", transport="socketpair")
    message = (
        "left waits in recv on pipe recv-recv end a, right waits in recv on pipe recv-recv "
        "end b; nothing is queued in either direction"
    )
    cycle = [
        {"pid": 11, "process": "left", "pipe": "1.1", "end": "a", "op": "recv"},
        {"pid": 12, "process": "right", "pipe": "1.1", "end": "b", "op": "recv"},
    ]
    for wait in cycle:
        wait["pipe_name"] = "recv-recv"
    verdict = {"run": "r1", "seq": 2, "kind": "verdict", "t": 9, "pid": 0, "process": ""}
    verdict |= {"verdict": "deadlock", "message": message, "cycle": cycle, "events": []}
    zh = lv_page.evaluate(DEADLOCK_TEXT, {"events": [pipe, verdict], "lang": "zh"})
    assert zh["bar"] == (
        "死锁：left（pid 11）在管道 recv-recv 的 a 端等待 recv；"
        "right（pid 12）在管道 recv-recv 的 b 端等待 recv"
    )
    assert zh["drawn"] == [zh["bar"]]
    assert zh["bar"] == "死锁：" + "；".join(zh["lines"])  # as the banner says it
    en = lv_page.evaluate(DEADLOCK_TEXT, {"events": [pipe, verdict], "lang": "en"})
    assert en["bar"] == (
        "Deadlock: left (pid 11) waits in recv on pipe recv-recv, end a; "
        "right (pid 12) waits in recv on pipe recv-recv, end b"
    )
    assert en["bare"] == f"Deadlock: {message}"  # no page lookup: the server's words


BANNERS_IN = """async ({ events, lang }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { bannersFor } = await import('/static/js/banner.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const model = createRunModel();
  model.apply(events);
  return bannersFor(model.state, createI18n(lang).t).map((b) => [b.kind, b.title, b.lines]);
}"""


def test_a_run_killed_with_its_worker_says_so_in_one_banner(lv_page: Any) -> None:
    """The `killed` verdict and the run's `killed` outcome name one process: one banner, with
    the outcome's sentence (it tells how the main process ended)."""
    run = {"run": "r1", "kind": "run", "pid": 0, "process": "pipescope"}
    who = {"process": "chatter", "pid": 7, "signal": ""}
    killed = {"run": "r1", "seq": 2, "kind": "verdict", "t": 100, "pid": 0, "process": ""}
    killed |= {"verdict": "killed", "message": "chatter (pid 7) was killed"}
    killed["reason"] = {"key": "killed", "args": {**who, "signum": None}}
    ended = {**run, "seq": 3, "t": 400, "state": "killed", "teardown_t": 300}
    ended["message"] = "chatter (pid 7) was killed; the main process carried on and exited with 0"
    ended["reason"] = {"key": "worker_killed", "args": {**who, "code": 0}}
    events = [{**run, "seq": 1, "t": 1, "state": "running"}, killed, ended]
    assert lv_page.evaluate(BANNERS_IN, {"events": events, "lang": "en"}) == [
        ["killed", "Process killed", ["chatter (pid 7) was killed; the main process exited with 0"]]
    ]
    assert lv_page.evaluate(BANNERS_IN, {"events": events, "lang": "zh"}) == [
        ["killed", "进程被终止", ["chatter（pid 7）被终止；主进程以退出码 0 退出"]]
    ]
    # A verdict of an earlier server, without its reason, names the process in its message.
    old = [events[0], {k: v for k, v in killed.items() if k != "reason"}, ended]
    assert [b[0] for b in lv_page.evaluate(BANNERS_IN, {"events": old, "lang": "en"})] == ["killed"]
    # Another process's kill is a finding of its own, beside the run's outcome.
    other = killed | {"message": "talker (pid 8) was killed"}
    other["reason"] = {"key": "killed", "args": {"process": "talker", "pid": 8}}
    banners = lv_page.evaluate(BANNERS_IN, {"events": [events[0], other, ended], "lang": "en"})
    assert [b[0] for b in banners] == ["killed", "status-killed"]
