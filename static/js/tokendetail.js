// Pure token detail: what one message was, byte by byte, for the detail panel.

import { hexOf, readOpcodes } from './pickle_opcodes.js';

const PICKLE_OPS = new Set(['send', 'recv']);

function bytesOfHex(hex) {
  const clean = String(hex || '').replace(/[^0-9a-fA-F]/g, '');
  const out = [];
  for (let i = 0; i + 1 < clean.length; i += 2) out.push(parseInt(clean.slice(i, i + 2), 16));
  return out;
}

function ascii(bytes) {
  return bytes.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
}

// The head is the payload; a head that still carries the 4-byte big-endian length prefix of
// the connection's frame is recognised by that prefix and the PROTO opcode after it.
function payloadOf(bytes, nbytes) {
  if (bytes.length > 4 && bytes[0] !== 0x80 && bytes[4] === 0x80) {
    const len = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
    if (len === nbytes) return bytes.slice(4);
  }
  return bytes;
}

function describeOp(op) {
  if (op.arg === null || op.arg === undefined) return op.name;
  const arg = typeof op.arg === 'string' && /BINUNICODE|STRING|UNICODE/.test(op.name)
    ? JSON.stringify(op.arg) : String(op.arg);
  return `${op.name} ${arg}${op.truncated ? ' …' : ''}`;
}

/**
 * Describe a token of the run model for the detail view.
 * Returns {repr, type, hex, ascii, opcodes: [{pos, code, name, arg, text}], complete, protocol,
 * kind: 'pickle'|'bytes', size, headSize, hash, recvHash, times: {sendNs, recvNs, latencyMs},
 * status, corrupt}. Pickle opcodes are read from the hex `head` as far as its bytes go.
 */
export function describeToken(token) {
  const raw = bytesOfHex(token && token.head);
  const bytes = payloadOf(raw, token ? token.nbytes : 0);
  const looksPickled = bytes[0] === 0x80 || (token && PICKLE_OPS.has(token.op));
  let opcodes = [];
  let complete = false;
  let protocol = null;
  if (looksPickled && bytes.length) {
    const read = readOpcodes(bytes);
    opcodes = read.ops.map((op) => ({ ...op, text: describeOp(op) }));
    complete = read.complete;
    protocol = read.protocol;
  }
  const sendNs = token?.tSend ?? null;
  const recvNs = token?.tRecv ?? null;
  let latencyMs = null;
  if (token?.latencyNs != null) latencyMs = token.latencyNs / 1e6;
  else if (sendNs != null && recvNs != null) latencyMs = (recvNs - sendNs) / 1e6;
  return {
    repr: token?.preview ?? '',
    type: token?.type ?? '',
    kind: looksPickled ? 'pickle' : 'bytes',
    hex: hexOf(bytes),
    ascii: ascii(bytes),
    opcodes,
    complete,
    protocol,
    size: token?.nbytes ?? 0,
    headSize: bytes.length,
    hash: token?.hash ?? '',
    recvHash: token?.recvHash ?? null,
    times: { sendNs, recvNs, latencyMs },
    status: token?.status ?? null,
    corrupt: token?.corrupt ?? null,
  };
}
