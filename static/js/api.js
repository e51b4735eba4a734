// REST client for /api: JSON in and out, the bearer token when one is configured.

/** An error from the server, carrying the HTTP status and the JSON `detail`. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === 'string' ? detail : `HTTP ${status}: ${JSON.stringify(detail)}`);
    this.status = status;
    this.detail = detail;
  }
}

/** Build the client; `fetchImpl` is injectable for tests. */
export function createApi({ base = '/api', token = '', fetchImpl = fetch } = {}) {
  async function request(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetchImpl(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) throw new ApiError(response.status, data?.detail ?? data ?? response.statusText);
    return data;
  }
  const runPath = (id, action) => `/runs/${encodeURIComponent(id)}/${action}`;
  return {
    scenarios: () => request('GET', '/scenarios'),
    runs: () => request('GET', '/runs'),
    /** A run's summary and its analysis: ends, statistics, verdicts. */
    run: (id) => request('GET', `/runs/${encodeURIComponent(id)}`),
    startRun: (spec) => request('POST', '/runs', spec),
    stopRun: (id) => request('POST', runPath(id, 'stop')),
    step: (id) => request('POST', runPath(id, 'step')),
    setStepMode: (id, on) => request('POST', runPath(id, 'step-mode'), { on }),
    events: (id) => request('GET', runPath(id, 'events')),
    /** A link that downloads the run as `jsonl` or `chrome` (a link carries no header). */
    exportUrl(id, format) {
      const query = new URLSearchParams({ format });
      if (token) query.set('token', token);
      return `${base}${runPath(id, 'export')}?${query}`;
    },
  };
}
