// The graph a run's pipes make between its processes: who is joined to whom, in what order.

/**
 * The pid drawn at an end: its first holder still open; once all have closed it, the one
 * that used it most (a process that only closed its inherited copy does not take the end
 * from the writer that sent on it), else the last one that held it.
 */
export function endPid(end) {
  if (!end) return null;
  const live = end.pids.filter((p) => end.open.includes(p));
  if (live.length) return live[0];
  let best = end.pids[end.pids.length - 1] ?? null;
  for (const pid of end.pids) if ((end.used?.[pid] ?? 0) > (end.used?.[best] ?? 0)) best = pid;
  return best;
}

export function edgesOf(state) {
  const edges = [];
  for (const pipe of Object.values(state.pipes)) {
    const a = endPid(pipe.ends.a);
    const b = endPid(pipe.ends.b);
    if (a == null || b == null) continue;
    // Every holder of an end is placed as if it alone held it: two writers sit side by side.
    const pairs = [...pipe.ends.a.pids.map((p) => [p, b]), ...pipe.ends.b.pids.map((p) => [a, p])];
    for (const [pa, pb] of pairs) {
      if (pa === pb) continue;
      // One-way pipes flow from the writer (b) to the reader (a); a duplex pipe from a to b.
      const edge = pipe.duplex ? [pa, pb] : [pb, pa];
      if (!edges.some(([f, t]) => f === edge[0] && t === edge[1])) edges.push(edge);
    }
  }
  return edges;
}

export function ranksOf(pids, edges) {
  const out = new Map(pids.map((p) => [p, []]));
  for (const [from, to] of edges) if (out.has(from) && out.has(to)) out.get(from).push(to);
  // Drop the edges that close a cycle (found by depth-first search), then rank by longest path.
  const colour = new Map();
  const dag = new Map(pids.map((p) => [p, []]));
  const visit = (p) => {
    colour.set(p, 1);
    for (const q of out.get(p)) {
      if (colour.get(q) === 1) continue;
      dag.get(p).push(q);
      if (!colour.has(q)) visit(q);
    }
    colour.set(p, 2);
  };
  for (const p of pids) if (!colour.has(p)) visit(p);
  const rank = new Map();
  const rankOf = (p) => {
    if (rank.has(p)) return rank.get(p);
    rank.set(p, 0);
    let r = 0;
    for (const [from, tos] of dag) if (tos.includes(p)) r = Math.max(r, rankOf(from) + 1);
    rank.set(p, r);
    return r;
  };
  for (const p of pids) rankOf(p);
  return rank;
}

/** Processes in reading order: those with no pipe first, then along the pipes, then by name. */
export function processOrder(state) {
  const procs = Object.values(state.processes);
  const edges = edgesOf(state);
  const linked = new Set(edges.flat());
  const rank = ranksOf(procs.map((p) => p.pid), edges);
  const key = (p) => (linked.has(p.pid) ? 1 + rank.get(p.pid) : 0);
  const named = byName(state);
  return procs.sort((p, q) => key(p) - key(q) || named(p.pid, q.pid));
}

/** Compare two pids by their processes' names, as people count: "worker-2" before "worker-10". */
export function byName(state) {
  const name = (pid) => state.processes[pid]?.name ?? '';
  return (p, q) => name(p).localeCompare(name(q), 'en', { numeric: true });
}
