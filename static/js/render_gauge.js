// Canvas drawing of a lane's gauge: its kernel buffer's fill against its capacity.

import { gaugeOf } from './model_lanes.js';
import { COLOURS, fitText, formatBytes } from './render_process.js';

/** The gauge beside lane `dir`: how full its kernel buffer is (model_lanes.gaugeOf), and a
 *  label saying so once anything is queued; `pad`: the room kept at each end of a lane. */
export function drawGauge(ctx, geom, dir, pipe, t, pad) {
  const lane = pipe.lanes[dir];
  if (!lane.capacity) return;
  const side = geom.laneY[dir] > 0 || (geom.laneY[dir] === 0 && !geom.flowsRight[dir]) ? 1 : -1;
  const y = side * (geom.width / 2 + 4);
  const room = geom.len - 2 * pad;
  const gauge = gaugeOf(pipe, dir);
  ctx.fillStyle = '#e2e8f0';
  ctx.fillRect(pad, y - 1.5, room, 3);
  ctx.fillStyle = gauge.fill > 0.85 ? COLOURS.blocked : '#64748b';
  const w = room * gauge.fill;
  ctx.fillRect(geom.flowsRight[dir] ? pad + room - w : pad, y - 1.5, w, 3);
  if ((lane.queued > 0 || gauge.waits) && geom.len > 170) {
    ctx.font = '10px system-ui, sans-serif';
    ctx.fillStyle = COLOURS.muted;
    ctx.textAlign = geom.flowsRight[dir] ? 'right' : 'left';
    ctx.textBaseline = side > 0 ? 'top' : 'bottom';
    // Cut to the lane's length: past it the label runs into the end markers.
    const x = geom.flowsRight[dir] ? geom.len - pad : pad;
    ctx.fillText(fitText(ctx, gaugeText(ctx, gauge, t, room), room), x, y + side * 4);
  }
}

/** The gauge's label, or its short form when the long one is wider than `room` (px, in the
 *  font set on ctx): a short lane still says how full the buffer is and that a send waits. */
export function gaugeText(ctx, gauge, t, room) {
  const long = gaugeLabel(gauge, t);
  return ctx.measureText(long).width <= room ? long : gaugeLabel(gauge, t, true);
}

/** The gauge's label: "queued 1.0 KiB / 64 KiB", "… · full: send waits" once a send waits; and
 *  when the frames sent leave room that the waiting send's frame fills (`partial`), that this
 *  frame fills it: "64 KiB full of the frame being sent" (no "queued 0 B" beside a full bar).
 *  `short`: for a short lane, "1.0 KiB / 64 KiB" and "64 KiB full: send waits". */
export function gaugeLabel(gauge, t, short = false) {
  const [queued, capacity] = [formatBytes(gauge.queued), formatBytes(gauge.capacity)];
  if (gauge.partial && short) return t('gauge.full.short', { capacity });
  if (gauge.partial) {
    return t(gauge.queued > 0 ? 'gauge.partial.queued' : 'gauge.partial', { capacity, queued });
  }
  const counted = gauge.counted > gauge.queued && !short
    ? ` · ${t('kernel_counts')} ≥ ${formatBytes(gauge.counted)}` : '';
  const full = gauge.waits ? ` · ${t('full_send_waits')}` : '';
  return `${short ? '' : `${t('queued')} `}${queued}${counted} / ${capacity}${full}`;
}
