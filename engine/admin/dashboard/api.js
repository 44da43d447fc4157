// Every call to the gateway: same origin only, the session cookie sent by the browser, and the
// header that tells the gateway the request comes from this page (its CSRF check).

let onLoggedOut = () => {};

export function whenLoggedOut(fn) {
  onLoggedOut = fn;
}

export async function api(method, path, body, options = {}) {
  const headers = { 'x-requested-with': 'ocpp-dashboard' };
  let payload;
  if (body !== undefined) {
    if (typeof body === 'string') {
      payload = body;
      headers['content-type'] = options.type || 'text/plain; charset=utf-8';
    } else {
      payload = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
  }
  let response;
  try {
    response = await fetch('/api/v5' + path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch (err) {
    return { status: 0, ok: false, data: { message: `the gateway cannot be reached (${err.message})` } };
  }
  const text = await response.text();
  let data = text;
  if ((response.headers.get('content-type') || '').includes('json') && text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (response.status === 401 && !options.login) onLoggedOut(data && data.message);
  return { status: response.status, ok: response.ok, data };
}

// The endpoint itself is missing (not a missing object behind a present endpoint).
export function missing(answer) {
  return answer.status === 404 && answer.data && answer.data.code === 'NOT_FOUND';
}

export function message(answer) {
  if (answer.data && typeof answer.data === 'object' && answer.data.message) return answer.data.message;
  if (typeof answer.data === 'string' && answer.data) return answer.data;
  return `HTTP ${answer.status}`;
}

export const get = (path) => api('GET', path);

// An SSE stream read with fetch (so a missing endpoint is a status to look at, not a console
// error): calls onEvent(name, data) per event until stop() is called or the stream ends.
export function stream(path, onEvent, onEnd, onOpen = () => {}) {
  const controller = new AbortController();
  (async () => {
    let response;
    try {
      response = await fetch('/api/v5' + path, {
        headers: { accept: 'text/event-stream', 'x-requested-with': 'ocpp-dashboard' },
        credentials: 'same-origin', signal: controller.signal,
      });
    } catch (err) {
      if (!controller.signal.aborted) onEnd({ status: 0, ok: false, data: { message: err.message } });
      return;
    }
    if (!response.ok) {
      const text = await response.text();
      let data = text;
      try { data = JSON.parse(text); } catch { /* text */ }
      onEnd({ status: response.status, ok: false, data });
      return;
    }
    onOpen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (data.length) onEvent(name, data.join('\n'));
        }
      }
      onEnd({ status: 200, ok: true, data: null });
    } catch (err) {
      if (!controller.signal.aborted) onEnd({ status: 0, ok: false, data: { message: err.message } });
    }
  })();
  return () => controller.abort();
}
