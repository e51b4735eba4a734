// Canvas drawing of a lane's gauge: its kernel buffer's fill against its capacity.

import { gaugeOf } from './model_lanes.js';
import { COLOURS, formatBytes } from './render_process.js';

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
    const counted = gauge.counted > gauge.queued ? ` · ${t('kernel_counts')} ≥ ${formatBytes(gauge.counted)}` : '';
    const full = gauge.waits ? ` · ${t('full_send_waits')}` : '';
    const text = `${t('queued')} ${formatBytes(gauge.queued)}${counted} / ${formatBytes(gauge.capacity)}${full}`;
    ctx.fillText(text, geom.flowsRight[dir] ? geom.len - pad : pad, y + side * 4);
  }
}
