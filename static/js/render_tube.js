// Canvas drawing of one pipe: its tube, lanes, end caps and blocked ends (gauges: render_gauge.js).

import { boxExit } from './layout.js';
import { drawGauge } from './render_gauge.js';
import { COLOURS, fitText, formatBytes, formatWait, roundRect } from './render_process.js';

export const LANE_W = 26;
const END_PAD = 12; // room at each end of a lane for the end marker

/** Straight tube between the two end processes' boxes, in a frame where it runs left to right. */
export function tubeGeometry(lp, boxes, pipe) {
  const ba = boxes[lp.a];
  const bb = boxes[lp.b];
  if (!ba || !bb) return null;
  const lanes = Object.keys(pipe.lanes);
  const width = lanes.length * LANE_W + 6;
  let pa, pb;
  if (lp.ports && lp.ports.a && lp.ports.b) {
    pa = lp.ports.a;
    pb = lp.ports.b;
  } else if (lp.a === lp.b) {
    // Both ends still in one process (not yet handed to a child): short tubes under its box,
    // three abreast when there are many (a pipeline's links before its stages start).
    const [perRow, half] = lp.slots > 3 ? [3, 80] : [1, 95];
    const y = ba.y + ba.h / 2 + 36 + width / 2 + Math.floor(lp.slot / perRow) * (width + 44);
    const x = ba.x + ((lp.slot % perRow) - (perRow - 1) / 2) * 190;
    [pa, pb] = [{ x: x - half, y }, { x: x + half, y }];
  } else {
    pa = boxExit(ba, bb.x, bb.y, 10);
    pb = boxExit(bb, ba.x, ba.y, 10);
    const off = (lp.slot - (lp.slots - 1) / 2) * (width + 26);
    if (off) {
      const len = Math.hypot(pb.x - pa.x, pb.y - pa.y) || 1;
      const nx = (-(pb.y - pa.y) / len) * off;
      const ny = ((pb.x - pa.x) / len) * off;
      pa = { x: pa.x + nx, y: pa.y + ny };
      pb = { x: pb.x + nx, y: pb.y + ny };
    }
  }
  const aLeft = pa.x <= pb.x;
  const p0 = aLeft ? pa : pb;
  const p1 = aLeft ? pb : pa;
  const len = Math.max(40, Math.hypot(p1.x - p0.x, p1.y - p0.y));
  const angle = Math.atan2(p1.y - p0.y, p1.x - p0.x);
  const laneY = {};
  const flowsRight = {};
  for (const dir of lanes) {
    const fromLeft = (dir[0] === 'a') === aLeft;
    flowsRight[dir] = fromLeft;
    // Traffic keeps to its side: rightward lanes above, leftward below.
    laneY[dir] = lanes.length === 1 ? 0 : fromLeft ? -LANE_W / 2 : LANE_W / 2;
  }
  return { p0, p1, len, angle, width, laneY, flowsRight, endX: { a: aLeft ? 0 : len, b: aLeft ? len : 0 } };
}

/** x in the tube frame of a point `d` pixels back from the receiving end of lane `dir`. */
export function laneX(geom, dir, d) {
  return geom.flowsRight[dir] ? geom.len - END_PAD - d : END_PAD + d;
}

export const laneRoom = (geom) => geom.len - 2 * END_PAD;

function drawEnd(ctx, geom, pipe, endName, info) {
  const end = pipe.ends[endName];
  const x = geom.endX[endName];
  const inward = x === 0 ? 1 : -1;
  const half = geom.width / 2;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'center';
  if (end.state === 'closed') {
    ctx.fillStyle = COLOURS.closed;
    roundRect(ctx, x - 3, -half - 4, 6, geom.width + 8, 2);
    ctx.fill();
    ctx.font = '600 9.5px system-ui, sans-serif';
    if (geom.len > 140) ctx.fillText(info.t('closed'), x + inward * 20, -half - 9);
    return;
  }
  const waits = Object.values(end.waiting || {});
  if (waits.length) {
    const since = Math.min(...waits.map((w) => w.since));
    const sending = waits.some((w) => w.op === 'send' || w.op === 'send_bytes');
    const stuck = info.deadlockEnds.has(`${pipe.id}/${endName}`);
    const colour = stuck ? COLOURS.deadlock : COLOURS.blocked;
    const pulse = 0.5 + 0.5 * Math.sin(info.nowMs / 180);
    ctx.strokeStyle = colour;
    ctx.globalAlpha = 0.35 + 0.65 * pulse;
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.arc(x, 0, half + 1 + 3 * pulse, 0, Math.PI * 2);
    ctx.stroke();
    ctx.globalAlpha = 1;
    ctx.font = '600 10px system-ui, sans-serif';
    ctx.fillStyle = colour;
    if (geom.len < 240) return drawEndMarker(ctx, x, endName, end); // the box shows the wait
    const what = sending ? 'blocked_send' : waits.every((w) => w.op === 'poll') ? 'blocked_poll' : 'blocked_recv';
    const label = `${info.t(what)} ${formatWait(info.waitMs(since))}`;
    ctx.textAlign = inward > 0 ? 'left' : 'right';
    ctx.fillText(label, x + inward * 10, half + 14);
    ctx.textAlign = 'center';
  }
  drawEndMarker(ctx, x, endName, end);
  if (end.error) {
    ctx.fillStyle = COLOURS.corrupt;
    ctx.font = '600 10px system-ui, sans-serif';
    ctx.textAlign = inward > 0 ? 'left' : 'right';
    ctx.fillText(`⚠ ${end.error.type}`, x + inward * 8, -half - 9);
  }
}

function drawEndMarker(ctx, x, endName, end) {
  ctx.fillStyle = end.error ? COLOURS.corrupt : '#475569';
  ctx.beginPath();
  ctx.arc(x, 0, 7, 0, Math.PI * 2);
  ctx.fill();
  ctx.fillStyle = '#fff';
  ctx.font = '600 9.5px system-ui, sans-serif';
  ctx.fillText(endName, x, 0.5);
}

/** Tube body, lane names and flow arrows, in the tube's frame (already applied). */
export function drawTubeBody(ctx, geom, pipe, info) {
  const half = geom.width / 2;
  roundRect(ctx, 0, -half, geom.len, geom.width, half);
  ctx.fillStyle = COLOURS.tube;
  ctx.fill();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = COLOURS.tubeEdge;
  ctx.stroke();
  const dirs = Object.keys(pipe.lanes);
  if (dirs.length === 2) {
    ctx.setLineDash([5, 5]);
    ctx.beginPath();
    ctx.moveTo(END_PAD, 0);
    ctx.lineTo(geom.len - END_PAD, 0);
    ctx.strokeStyle = '#cbd5e1';
    ctx.lineWidth = 1;
    ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.fillStyle = '#cbd5e1';
  for (const dir of dirs) {
    const y = geom.laneY[dir];
    const s = geom.flowsRight[dir] ? 1 : -1;
    for (let x = END_PAD + 44; x < geom.len - END_PAD - 20; x += 46) {
      ctx.beginPath();
      ctx.moveTo(x - 4 * s, y - 4);
      ctx.lineTo(x + 3 * s, y);
      ctx.lineTo(x - 4 * s, y + 4);
      ctx.fill();
    }
  }
  ctx.font = '600 9px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  for (const dir of dirs) {
    // Name the lane where its messages enter, so the two directions read apart.
    ctx.textAlign = geom.flowsRight[dir] ? 'left' : 'right';
    ctx.fillStyle = '#94a3b8';
    const x = geom.flowsRight[dir] ? END_PAD + 2 : geom.len - END_PAD - 2;
    ctx.fillText(dir.replace('>', '→'), x, geom.laneY[dir] + 0.5);
  }
}

/** Gauges, the pipe's label and both ends: drawn after every tube so none hides them. */
export function drawTubeLabels(ctx, geom, pipe, info) {
  const half = geom.width / 2;
  for (const dir of Object.keys(pipe.lanes)) drawGauge(ctx, geom, dir, pipe, info.t, END_PAD);
  ctx.font = '600 11px system-ui, sans-serif';
  ctx.fillStyle = COLOURS.ink;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'bottom';
  const kind = pipe.duplex ? info.t('duplex') : `${info.t('one_way')} b → a`;
  const corrupt = info.corruptByPipe.get(pipe.id) || 0;
  const label = `${pipe.name} · ${kind}${corrupt ? ` · ⚠ ${corrupt} ${info.t('corrupt')}` : ''}`;
  ctx.fillStyle = corrupt ? COLOURS.corrupt : COLOURS.ink;
  const room = geom.len - 60;
  // A short tube still shows its pipe's name (after its corrupt count), over the whole tube.
  const short = corrupt ? `⚠ ${corrupt} · ${pipe.name}` : pipe.name;
  const [text, fits] = ctx.measureText(label).width > room ? [short, geom.len] : [label, room];
  if (fits > 30) ctx.fillText(fitText(ctx, text, fits), geom.len / 2, -half - 18);
  drawEnd(ctx, geom, pipe, 'a', info);
  drawEnd(ctx, geom, pipe, 'b', info);
}
