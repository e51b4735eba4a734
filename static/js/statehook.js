// The read-only test hook's view of the page: a JSON-safe summary of the model and the controls.

/** Summarise model state and UI for `window.pipescope.state()`; tests assert on this. */
export function summarise(state, { run, playback, controls, lang, banners, callsStarted,
  replay = null, skipped = { server: 0, page: 0 } }) {
  const tokens = Object.values(state.tokens).map((tk) => ({
    seq: tk.seq, pipe: tk.pipe, dir: tk.dir, fromPid: tk.fromPid, toPid: tk.toPid,
    status: tk.status, corrupt: tk.corrupt, recvSeq: tk.recvSeq, preview: tk.preview,
    nbytes: tk.nbytes, hash: tk.hash, recvHash: tk.recvHash ?? null,
  }));
  const processes = Object.values(state.processes).map((p) => ({
    pid: p.pid, name: p.name, lines: p.lines.map((line) => line.text), blocked: p.blocked,
    exited: p.exited, exitcode: p.exitcode,
  }));
  const pipes = Object.values(state.pipes).map((p) => ({
    id: p.id, name: p.name, duplex: p.duplex,
    ends: { a: p.ends.a?.state ?? null, b: p.ends.b?.state ?? null },
    queued: Object.fromEntries(Object.entries(p.lanes).map(([dir, lane]) => [dir, lane.tokens.length])),
  }));
  return JSON.parse(JSON.stringify({
    run: run.id,
    runState: run.summary?.state ?? null,
    status: state.status,
    message: state.message,
    reason: state.reason,
    window: state.window,
    processes,
    pipes,
    tokens,
    delivered: state.delivered,
    verdicts: state.verdicts.map((v) => ({ verdict: v.verdict, message: v.message, cycle: v.cycle ?? null })),
    deadlock: state.deadlock ? { message: state.deadlock.message, cycle: state.deadlock.cycle ?? [] } : null,
    lastCall: state.lastCall,
    counts: state.counts,
    callsStarted,
    // calls and output lines left out: by the server for this page (`thin`), by the page
    skipped,
    backlog: playback.backlog,
    view: replay ? 'replay' : 'live',
    replay,
    banners: [...banners.querySelectorAll('[data-banner]')].map((b) => ({ kind: b.dataset.banner, text: b.textContent })),
    ui: { lang, speed: controls.speed, paused: controls.paused, stepMode: controls.stepMode },
  }));
}

/**
 * Count traced calls that started: a `begin`, or an `end`/`error` of a call that had none.
 * In step mode each Step lets exactly one call start, so this is what a Step advances.
 */
export function createCallCounter() {
  const open = new Set();
  let started = 0;
  return {
    add(events) {
      for (const ev of events) {
        if (ev.kind !== 'call') continue;
        const key = `${ev.pid}/${ev.pipe}/${ev.end}`;
        if (ev.phase === 'begin') {
          open.add(key);
          started += 1;
        } else if (!open.delete(key)) {
          started += 1;
        }
      }
    },
    reset() { open.clear(); started = 0; },
    get started() { return started; },
  };
}
