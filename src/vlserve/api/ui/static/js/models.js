// The Models tab: the running models, polled every two seconds, with terminate. Other views get the list
// through the "models" event (the chat's model picker, the tab's counter).

import { request } from "./api.js";
import { $, el, emit, on, toast } from "./dom.js";

const POLL_MS = 2000;
let last = "";
let polling = null;

export function initModels() {
  on("models-changed", refresh);
  poll();
}

async function poll() {
  if (!document.hidden) await refresh();
  setTimeout(poll, POLL_MS);
}

export async function refresh() {
  polling ??= request("/v1/models")
    .then(({ data }) => show(data))
    .catch((error) => { $("models-empty").textContent = `Cannot list models: ${error.message}`; })
    .finally(() => { polling = null; });
  return polling;
}

function show(models) {
  $("models-empty").textContent = "No models are running. Launch one from the Launch tab.";
  $("models-empty").hidden = models.length > 0;
  const json = JSON.stringify(models);
  if (json === last) return; // unchanged: keep the rows (and whatever the pointer is on)
  last = json;
  $("models-rows").replaceChildren(...models.map(row));
  $("models-count").textContent = models.length ? String(models.length) : "";
  emit("models", models);
}

export const specLabel = (m) => `${m.model_name} ${m.model_size_in_billions}B ${m.model_format} ${m.quantization}`;

function statusCell(m) {
  const badge = el("span", { className: `badge ${m.status}`, textContent: m.status });
  if (m.status === "downloading") badge.textContent += ` ${Math.round((m.progress ?? 0) * 100)}%`;
  return el("td", { className: "status-cell" }, badge, m.error ? el("div", { className: "error-text", textContent: m.error }) : null);
}

function placement(m) {
  const gpus = m.n_gpu === null ? "CPU only" : `GPUs: ${m.n_gpu}`;
  return `${m.replica} × ${m.device ?? "…"} · ${gpus}${m.dtype ? ` · ${m.dtype}` : ""}`;
}

function row(m) {
  const chat = el("button", { type: "button", className: "quiet", textContent: "Chat", disabled: m.status !== "ready" });
  chat.addEventListener("click", () => emit("select-model", m.id));
  const stop = el("button", { type: "button", className: "danger", textContent: "Terminate" });
  stop.addEventListener("click", () => terminate(m.id));
  return el("tr", { dataset: { uid: m.id } },
    el("td", {}, el("code", { textContent: m.id })),
    el("td", { textContent: specLabel(m) }),
    el("td", { textContent: m.model_engine }),
    statusCell(m),
    el("td", { textContent: placement(m) }),
    el("td", { className: "actions" }, chat, stop));
}

async function terminate(uid) {
  if (!window.confirm(`Terminate ${uid}? Its requests stop and its memory is freed.`)) return;
  try {
    await request(`/v1/models/${encodeURIComponent(uid)}`, { method: "DELETE" });
    toast(`Terminated ${uid}`, "info");
  } catch (error) {
    toast(error.message);
  }
  await refresh();
}
