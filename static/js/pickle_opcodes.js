// Pure pickle opcode reader for the first bytes of a frame: stops cleanly where the bytes end.

// code -> [name, argument kind]; kinds are read by readArg below.
const OPCODES = {
  0x80: ['PROTO', 'u1'], 0x95: ['FRAME', 'u8'], 0x2e: ['STOP', ''], 0x28: ['MARK', ''],
  0x30: ['POP', ''], 0x31: ['POP_MARK', ''], 0x32: ['DUP', ''],
  0x46: ['FLOAT', 'line'], 0x49: ['INT', 'line'], 0x4c: ['LONG', 'line'],
  0x4a: ['BININT', 'i4'], 0x4b: ['BININT1', 'u1'], 0x4d: ['BININT2', 'u2'],
  0x8a: ['LONG1', 'long1'], 0x8b: ['LONG4', 'long4'],
  0x4e: ['NONE', ''], 0x88: ['NEWTRUE', ''], 0x89: ['NEWFALSE', ''],
  0x53: ['STRING', 'line'], 0x54: ['BINSTRING', 'bytes4'], 0x55: ['SHORT_BINSTRING', 'bytes1'],
  0x56: ['UNICODE', 'line'], 0x58: ['BINUNICODE', 'str4'], 0x8c: ['SHORT_BINUNICODE', 'str1'],
  0x8d: ['BINUNICODE8', 'str8'], 0x42: ['BINBYTES', 'bytes4'], 0x43: ['SHORT_BINBYTES', 'bytes1'],
  0x8e: ['BINBYTES8', 'bytes8'], 0x96: ['BYTEARRAY8', 'bytes8'],
  0x97: ['NEXT_BUFFER', ''], 0x98: ['READONLY_BUFFER', ''], 0x47: ['BINFLOAT', 'f8'],
  0x5d: ['EMPTY_LIST', ''], 0x61: ['APPEND', ''], 0x65: ['APPENDS', ''], 0x6c: ['LIST', ''],
  0x29: ['EMPTY_TUPLE', ''], 0x74: ['TUPLE', ''], 0x85: ['TUPLE1', ''], 0x86: ['TUPLE2', ''],
  0x87: ['TUPLE3', ''], 0x7d: ['EMPTY_DICT', ''], 0x64: ['DICT', ''], 0x73: ['SETITEM', ''],
  0x75: ['SETITEMS', ''], 0x8f: ['EMPTY_SET', ''], 0x90: ['ADDITEMS', ''],
  0x91: ['FROZENSET', ''], 0x63: ['GLOBAL', 'line2'], 0x93: ['STACK_GLOBAL', ''],
  0x52: ['REDUCE', ''], 0x62: ['BUILD', ''], 0x69: ['INST', 'line2'], 0x6f: ['OBJ', ''],
  0x81: ['NEWOBJ', ''], 0x92: ['NEWOBJ_EX', ''], 0x70: ['PUT', 'line'], 0x71: ['BINPUT', 'u1'],
  0x72: ['LONG_BINPUT', 'u4'], 0x67: ['GET', 'line'], 0x68: ['BINGET', 'u1'],
  0x6a: ['LONG_BINGET', 'u4'], 0x94: ['MEMOIZE', ''], 0x50: ['PERSID', 'line'],
  0x51: ['BINPERSID', ''], 0x82: ['EXT1', 'u1'], 0x83: ['EXT2', 'u2'], 0x84: ['EXT4', 'i4'],
};

class Truncated extends Error {}

function uint(bytes, pos, n) {
  if (pos + n > bytes.length) throw new Truncated();
  let v = 0;
  for (let i = n - 1; i >= 0; i -= 1) v = v * 256 + bytes[pos + i]; // little-endian
  return v;
}

const text = (bytes) => new TextDecoder('utf-8', { fatal: false }).decode(Uint8Array.from(bytes));
const latin1 = (bytes) => String.fromCharCode(...bytes);

function line(bytes, pos) {
  const nl = bytes.indexOf(0x0a, pos);
  if (nl < 0) throw new Truncated();
  return [latin1(bytes.slice(pos, nl)), nl + 1 - pos];
}

// Returns [argument value, bytes consumed, truncated?]: a length-prefixed value cut by the
// end of the head is shown as far as it goes.
function readArg(kind, bytes, pos) {
  const sized = (lenBytes, decode) => {
    const len = uint(bytes, pos, lenBytes);
    const start = pos + lenBytes;
    const part = bytes.slice(start, start + len);
    return [decode(part), lenBytes + len, part.length < len, len];
  };
  switch (kind) {
    case '': return [null, 0, false];
    case 'u1': return [uint(bytes, pos, 1), 1, false];
    case 'u2': return [uint(bytes, pos, 2), 2, false];
    case 'u4': return [uint(bytes, pos, 4), 4, false];
    case 'u8': return [uint(bytes, pos, 8), 8, false];
    case 'i4': { const v = uint(bytes, pos, 4); return [v >= 2 ** 31 ? v - 2 ** 32 : v, 4, false]; }
    case 'f8': {
      if (pos + 8 > bytes.length) throw new Truncated();
      return [new DataView(Uint8Array.from(bytes.slice(pos, pos + 8)).buffer).getFloat64(0), 8, false];
    }
    case 'line': return line(bytes, pos).concat(false);
    case 'line2': {
      const [mod, n1] = line(bytes, pos);
      const [name, n2] = line(bytes, pos + n1);
      return [`${mod}.${name}`, n1 + n2, false];
    }
    case 'str1': return sized(1, text);
    case 'str4': return sized(4, text);
    case 'str8': return sized(8, text);
    case 'bytes1': return sized(1, hexOf);
    case 'bytes4': return sized(4, hexOf);
    case 'bytes8': return sized(8, hexOf);
    case 'long1': return sized(1, longOf);
    case 'long4': return sized(4, longOf);
    default: return [null, 0, false];
  }
}

export const hexOf = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');

function longOf(bytes) {
  if (!bytes.length) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i -= 1) v = (v << 8n) | BigInt(bytes[i]);
  if (bytes[bytes.length - 1] & 0x80) v -= 1n << BigInt(8 * bytes.length); // two's complement
  return v.toString();
}

/**
 * Read the opcodes in `bytes` (an array of 0..255).
 * Returns {ops: [{pos, code, name, arg, truncated?}], complete, protocol}: `complete` is true
 * when STOP was reached, false when the bytes ran out or an unknown opcode was met.
 */
export function readOpcodes(bytes) {
  const ops = [];
  let pos = 0;
  let protocol = null;
  while (pos < bytes.length) {
    const code = bytes[pos];
    const known = OPCODES[code];
    const hex = code.toString(16).padStart(2, '0');
    if (!known) {
      ops.push({ pos, code: hex, name: 'UNKNOWN', arg: null });
      return { ops, complete: false, protocol };
    }
    const [name, kind] = known;
    try {
      const [arg, used, cut, declared] = readArg(kind, bytes, pos + 1);
      const op = { pos, code: hex, name, arg };
      if (declared !== undefined) op.length = declared;
      if (name === 'PROTO') protocol = arg;
      if (cut) {
        op.truncated = true;
        ops.push(op);
        return { ops, complete: false, protocol };
      }
      ops.push(op);
      pos += 1 + used;
      if (name === 'STOP') return { ops, complete: true, protocol };
    } catch (err) {
      if (!(err instanceof Truncated)) throw err;
      ops.push({ pos, code: hex, name, arg: null, truncated: true });
      return { ops, complete: false, protocol };
    }
  }
  return { ops, complete: false, protocol };
}
