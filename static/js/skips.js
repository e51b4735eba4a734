// What of the shown run the page went without, and who left it out: the server (thinned
// batches the page asked for while it was behind) or the page itself (what piled up anyway).

/**
 * Counts of calls and output lines left out. show(nowMs) hands a new total to onShow(total)
 * at most once every `everyMs` (redrawing the banners rebuilds them, and under a flood the
 * count moves on every frame); it returns true while a newer total still waits to be shown.
 */
export function createSkips({ onShow = () => {}, everyMs = 1000 } = {}) {
  const by = { server: 0, page: 0 };
  let said = 0;
  let shownAt = -Infinity;
  const total = () => by.server + by.page;
  return {
    // `quiet`: told in other words already (a snapshot's notice): no new count shows for it.
    add(count, who = 'page', quiet = false) {
      by[who === 'server' ? 'server' : 'page'] += count;
      if (quiet) said += count;
    },
    reset() {
      by.server = 0;
      by.page = 0;
      said = 0;
    },
    show(nowMs) {
      if (total() === said) return false;
      if (nowMs - shownAt < everyMs) return true;
      said = total();
      shownAt = nowMs;
      onShow(said);
      return false;
    },
    get total() { return total(); },
    get counts() { return { ...by }; },
  };
}
