"""The live view's playback and feed in chromium: recorded time, floods, snapshots in slices."""

from typing import Any

import pytest

from tests.e2e import synthetic

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e


PACE = """async ({ speed, frames }) => {
  const { createPlayback } = await import('/static/js/playback.js');
  const pb = createPlayback({ live: false });
  pb.setSpeed(speed);
  const events = [];
  for (let i = 0; i < 200; i++) events.push({ seq: i + 1, kind: 'call', t: 5e9 + i * 10e6 });
  pb.push(events);
  let released = 0;
  for (let f = 0; f <= frames; f++) released += pb.advance(1000 + f * 16).length;
  return { released, backlog: pb.backlog };
}"""


def test_playback_paces_recorded_time_and_half_speed_halves_the_rate(lv_page: Any) -> None:
    full = lv_page.evaluate(PACE, {"speed": 1, "frames": 50})
    half = lv_page.evaluate(PACE, {"speed": 0.5, "frames": 50})
    # 800 ms of injected clock: 81 events at 1x (one per 10 ms, the first at once), 41 at 0.5x.
    assert full["released"] == 81
    assert half["released"] == 41
    assert full["backlog"] == 200 - 81


FLOOD = """async () => {
  const { createPlayback } = await import('/static/js/playback.js');
  const pb = createPlayback();
  const events = [];
  for (let i = 0; i < 10000; i++) events.push({ seq: i + 1, kind: 'call', t: 1e9 + i * 1e6 });
  pb.push(events);
  const first = pb.advance(0).length;
  const live = createPlayback();
  let maxBacklog = 0;
  let maxDelay = 0;
  let released = 0;
  // Live input at its own pace, arriving in frames 33 ms late: the view keeps up.
  for (let f = 0; f < 300; f++) {
    const now = f * 16;
    live.push(events.filter((e) => (e.t - 1e9) / 1e6 <= now - 33 && (e.t - 1e9) / 1e6 > now - 49));
    released += live.advance(now).length;
    maxBacklog = Math.max(maxBacklog, live.backlog);
    maxDelay = Math.max(maxDelay, live.delayMs);
  }
  return { first, backlog: pb.backlog, caughtUp: pb.caughtUp, released, maxBacklog, maxDelay };
}"""


def test_playback_catches_up_under_a_flood_and_keeps_live_input_close(lv_page: Any) -> None:
    out = lv_page.evaluate(FLOOD)
    assert (out["first"], out["backlog"], out["caughtUp"]) == (10000, 0, 10000)
    assert out["maxBacklog"] <= 40, out
    assert out["maxDelay"] <= 50, out


def test_speed_outside_the_range_is_clamped_and_nonsense_refused(lv_page: Any) -> None:
    out = lv_page.evaluate(
        """async () => {
          const { createPlayback } = await import('/static/js/playback.js');
          const pb = createPlayback();
          pb.setSpeed(100); const hi = pb.speed; pb.setSpeed(0.01); const lo = pb.speed;
          let message = '';
          try { pb.setSpeed('fast'); } catch (err) { message = err.message; }
          return { hi, lo, message };
        }"""
    )
    assert (out["hi"], out["lo"]) == (4, 0.1)
    assert out["message"] == "speed must be a positive number, got fast"


SLICES = """async (events) => {
  const { slices } = await import('/static/js/socket_worker.js');
  const shuffled = [...events].reverse();
  const parts = slices({ type: 'snapshot', run: { id: 'rwindow' }, events: shuffled,
    notice: 'n' }, 500);
  const batch = slices({ type: 'events', run: 'rwindow', events: events.slice(0, 1200) }, 500);
  const small = slices({ type: 'runs', runs: [] }, 500);
  return { parts: parts.map((p) => ({ type: p.type, run: p.run, n: p.events.length,
    missing: p.missing, notice: p.notice, seqs: p.events.map((e) => e.seq) })),
    batch: batch.map((p) => [p.type, p.run, p.events.length]), small };
}"""


def test_a_long_snapshot_reaches_the_page_in_slices_in_seq_order(lv_page: Any) -> None:
    events = synthetic.windowed_snapshot()
    out = lv_page.evaluate(SLICES, events)
    first, *rest = out["parts"]
    assert (first["type"], first["n"], first["notice"]) == ("snapshot", 500, "n")
    assert first["missing"] == synthetic.LAST_SEND - len(events)
    assert {(p["type"], p["run"]) for p in rest} == {("events", synthetic.RUN)}
    assert [s for p in out["parts"] for s in p["seqs"]] == [e["seq"] for e in events]
    assert out["batch"] == [
        ["events", "rwindow", 500],
        ["events", "rwindow", 500],
        ["events", "rwindow", 200],
    ]
    assert out["small"] == [{"type": "runs", "runs": []}]


GATHER = """async (events) => {
  const { slices } = await import('/static/js/socket_worker.js');
  const { gatherSnapshots } = await import('/static/js/socket.js');
  const got = [];
  const take = gatherSnapshots((frame) => got.push(frame));
  const parts = slices({ type: 'snapshot', run: { id: 'rwindow' }, events, notice: 'n' }, 500);
  const seen = [];
  parts.forEach((part, i) => {
    take(JSON.parse(JSON.stringify(part)));  // as the worker posts them: JSON text
    if (i === 1) take({ type: 'runs', runs: [] });  // other frames are not held up
    seen.push(got.map((f) => [f.type, f.events?.length ?? 0]));
  });
  take({ type: 'events', run: 'rwindow', events: [{ seq: 1e6 }] });
  return { seen, last: got.map((f) => [f.type, f.events?.length ?? 0, f.sliced ?? null]) };
}"""


def test_the_slices_of_a_snapshot_reach_the_page_as_one_snapshot(lv_page: Any) -> None:
    # A finished run's snapshot applied slice by slice read "running" part of the way.
    events = synthetic.windowed_snapshot()
    out = lv_page.evaluate(GATHER, events)
    assert len(out["seen"]) > 2, "the snapshot is long enough to be cut up"
    assert all(seen == [] for seen in out["seen"][:1])
    assert all(seen == [["runs", 0]] for seen in out["seen"][1:-1])
    assert out["last"] == [["runs", 0, None], ["snapshot", len(events), False], ["events", 1, None]]


FEED = """async () => {
  const { createFeed } = await import('/static/js/feed.js');
  const { createPlayback } = await import('/static/js/playback.js');
  const applied = [];
  const model = { apply: (batch) => applied.push(batch.map((e) => e.seq)), reset() {} };
  let now = 0;
  const clock = () => (now += 1); // each look at the clock costs a millisecond
  const feed = createFeed({ model, playback: createPlayback(), budgetMs: 6, clock });
  const events = [];
  for (let i = 1; i <= 5000; i++) events.push({ seq: i, kind: 'call', t: 1e9 + i });
  feed.push(events);
  const perFrame = [];
  for (let f = 0; f < 10 && (f === 0 || feed.backlog); f++) {
    const before = applied.flat().length;
    feed.pump(f * 16);
    perFrame.push(applied.flat().length - before);
  }
  return { perFrame, seqs: applied.flat(), backlog: feed.backlog };
}"""


def test_the_feed_spreads_a_large_batch_over_frames_in_order(lv_page: Any) -> None:
    out = lv_page.evaluate(FEED)
    assert len(out["perFrame"]) > 1 and max(out["perFrame"]) < 5000, out["perFrame"]
    assert sum(out["perFrame"]) == 5000 and out["backlog"] == 0
    assert out["seqs"] == list(range(1, 5001))


SKIP = """async () => {
  const { createFeed } = await import('/static/js/feed.js');
  const { createPlayback } = await import('/static/js/playback.js');
  const applied = [];
  const skips = [];
  const model = { apply: (batch) => applied.push(...batch), reset() {} };
  const feed = createFeed({ model, playback: createPlayback(), maxWaiting: 1000, keep: 100,
    onSkip: (n) => skips.push(n) });
  const events = [];
  for (let i = 1; i <= 3000; i++) {
    const kind = i % 500 === 0 ? 'process' : 'call';
    events.push({ seq: i, kind, t: 1e9 + i });
  }
  feed.push(events);
  for (let f = 0; f < 50 && (f === 0 || feed.backlog); f++) feed.pump(f * 16);
  return { seqs: applied.map((e) => e.seq), kinds: applied.map((e) => e.kind), skips };
}"""


def test_a_view_that_falls_behind_keeps_every_run_event_and_the_latest_calls(
    lv_page: Any,
) -> None:
    out = lv_page.evaluate(SKIP)
    calls = [s for s, k in zip(out["seqs"], out["kinds"], strict=True) if k == "call"]
    assert calls == list(range(2900, 3000))  # the latest 100 calls (3000 is no call)
    assert [s for s, k in zip(out["seqs"], out["kinds"], strict=True) if k != "call"] == [
        500,
        1000,
        1500,
        2000,
        2500,
        3000,
    ]
    assert out["seqs"] == sorted(out["seqs"])
    assert out["skips"] == [3000 - 6 - 100]


THIN = """async () => {
  const { thin } = await import('/static/js/socket_worker.js');
  const frames = [];
  let seq = 0;
  for (let f = 0; f < 6; f++) {
    const events = [];
    for (let i = 0; i < 500; i++) {
      seq += 1;
      events.push({ seq, kind: seq % 1000 === 0 ? 'verdict' : 'call', t: seq });
    }
    frames.push({ type: 'events', run: 'r1', events });
    if (f === 2) frames.push({ type: 'snapshot', run: { id: 'r2' }, events: [] });
  }
  const { frames: left, gone } = thin(frames, 100);
  return { gone, types: left.map((f) => f.type),
    seqs: left.filter((f) => f.type === 'events').flatMap((f) => f.events.map((e) => e.seq)) };
}"""


def test_a_worker_thins_what_waits_to_the_run_events_and_the_latest_calls(lv_page: Any) -> None:
    out = lv_page.evaluate(THIN)
    assert out["gone"] == [["r1", 3000 - 3 - 100]]
    # every verdict, then the latest 100 calls; the other run's snapshot stays in its place
    assert out["seqs"] == [1000, 2000, *range(2900, 3000), 3000]
    assert out["types"].count("snapshot") == 1
