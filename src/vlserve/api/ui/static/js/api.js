// Talking to the vlserve API: JSON requests with the tab's API key, OpenAI-style errors, and SSE streams.
// The page holds no data of its own; every view asks through `request`, so a server with keys refuses it all
// until the user gives a key.

const KEY_NAME = "vlserve.apiKey";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (key) => sessionStorage.setItem(KEY_NAME, key),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

// How the page asks the user for a key: set by app.js (a dialog); resolves to the key, or null when declined.
let askForKey = async () => null;
let pendingAsk = null;   // one dialog for all the requests that got 401 at the same time
let declined = false;    // after "Cancel", polling does not reopen the dialog; the header button does

export function onKeyNeeded(ask) {
  askForKey = ask;
}

export function resetKeyPrompt() {
  declined = false;
}

async function keyFromUser(reason) {
  if (declined) return false;
  pendingAsk ??= askForKey(reason).then((key) => {
    pendingAsk = null;
    if (!key) {
      declined = true;
      return false;
    }
    apiKey.set(key);
    return true;
  });
  return pendingAsk;
}

export async function errorMessage(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    const message = body?.error?.message ?? body?.detail;
    if (typeof message === "string" && message) return message;
  } catch {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText || "error"}${text ? `: ${text.slice(0, 200)}` : ""}`;
}

function urlFor(path, params) {
  const kept = Object.entries(params ?? {}).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return kept.length ? `${path}?${new URLSearchParams(kept)}` : path;
}

function init(method, body, signal) {
  const headers = new Headers();
  const key = apiKey.get();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  if (body !== undefined) headers.set("Content-Type", "application/json");
  return { method, signal, headers, body: body === undefined ? undefined : JSON.stringify(body) };
}

// fetch with the key; on 401 ask for a key and retry. Returns the Response (ok) or throws ApiError.
export async function send(path, { method = "GET", body, params, signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const response = await fetch(urlFor(path, params), init(method, body, signal));
    if (response.ok) return response;
    const message = await errorMessage(response);
    if (response.status === 401 && attempt < 3 && (await keyFromUser(message))) continue;
    throw new ApiError(message, response.status);
  }
}

export async function request(path, options) {
  const response = await send(path, options);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

// Server-sent events: feed decoded text, get back the `data` of each complete event.
export class SseParser {
  constructor() {
    this.buffer = "";
  }

  push(text) {
    this.buffer += text;
    const held = this.buffer.endsWith("\r") ? "\r" : ""; // maybe the first half of a \r\n
    const events = this.buffer.slice(0, this.buffer.length - held.length).replace(/\r\n?/g, "\n").split("\n\n");
    this.buffer = events.pop() + held;
    return events.map(dataOf).filter((data) => data !== null);
  }

  flush() {
    return this.push("\n\n");
  }
}

function dataOf(event) {
  const lines = event.split("\n").filter((line) => line.startsWith("data:"));
  if (!lines.length) return null;
  return lines.map((line) => line.slice(line.startsWith("data: ") ? 6 : 5)).join("\n");
}

// POST a chat completion with stream: true and yield each chunk object until [DONE].
export async function* streamChat(body, signal) {
  yield* readChunks(await send("/v1/chat/completions", { method: "POST", body, signal }));
}

// The JSON chunks of an OpenAI SSE response. An error chunk (the stream failed after it began) throws ApiError.
export async function* readChunks(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      for (const data of done ? parser.flush() : parser.push(value)) {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(chunk.error.message ?? "the stream failed", chunk.error.code ?? 500);
        yield chunk;
      }
      if (done) return;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
