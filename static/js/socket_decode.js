// The websocket's messages as server frames, in the order they arrived. Where the browser can
// inflate raw DEFLATE, the worker asks for compressed `events` frames (/ws?compress=deflate-raw,
// docs/protocol.md): a flood then costs the server, the network and the worker about a
// twentieth of the bytes.

export const COMPRESSION = 'deflate-raw';

/** Whether this browser's DecompressionStream inflates raw DEFLATE. */
export function canInflate() {
  try {
    new DecompressionStream(COMPRESSION);
    return true;
  } catch {
    return false; // no DecompressionStream, or one without 'deflate-raw'
  }
}

/** The websocket URL asking for compressed `events` frames, the query it had kept. */
export function compressedUrl(url) {
  const out = new URL(url);
  const ask = `compress=${COMPRESSION}`;
  out.search = out.search.length > 1 ? `${out.search}&${ask}` : ask;
  return out.href;
}

/** A raw DEFLATE stream inflated: the bytes it holds. */
export function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(COMPRESSION));
  return new Response(stream).arrayBuffer();
}

/**
 * Reads websocket messages as frames: read(data) takes a message's data (text, or a binary
 * message's ArrayBuffer, inflated first when `compressed`) and calls take(frame) once every
 * message before it has been taken. Inflating is asynchronous, so each message waits on one
 * chain of promises: a small text frame never overtakes the large compressed one before it.
 * A message that does not inflate or parse is skipped, as the server only sends JSON.
 * after(fn) runs fn once every message so far has been taken (a close, say).
 */
export function createFrameReader(take, { compressed = false } = {}) {
  const utf8 = new TextDecoder();
  let chain = Promise.resolve();

  async function decode(data) {
    try {
      if (typeof data === 'string') return JSON.parse(data);
      return JSON.parse(utf8.decode(compressed ? await inflate(data) : data));
    } catch {
      return undefined;
    }
  }
  function after(fn) {
    chain = chain.then(fn).catch((error) => {
      // Thrown where it would have been without the chain, and the chain goes on.
      setTimeout(() => {
        throw error;
      });
    });
  }
  function read(data) {
    const frame = decode(data);
    after(async () => {
      const parsed = await frame;
      if (parsed !== undefined) take(parsed);
    });
  }
  return { read, after };
}
