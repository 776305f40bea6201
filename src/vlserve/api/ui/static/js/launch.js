// The Launch tab: pick a family and a spec the registry allows, launch it, and watch it come up.

import { ApiError, request } from "./api.js";
import { FIELDS, choices, parseOptions, scalar } from "./choices.js";
import { $, el, emit, on, toast } from "./dom.js";

const SELECTS = { engine: "launch-engine", format: "launch-format", size: "launch-size", quantization: "launch-quantization" };
const state = { families: [], runnable: {}, pick: {}, watching: null };

export async function initLaunch() {
  $("launch-family").addEventListener("change", () => selectFamily());
  for (const field of FIELDS) {
    $(SELECTS[field]).addEventListener("change", (event) => {
      state.pick[field] = event.target.value;
      render();
    });
  }
  $("launch-form").addEventListener("submit", (event) => {
    event.preventDefault();
    launch();
  });
  $("launch-cancel").addEventListener("click", cancel);
  on("families-changed", loadFamilies);
  await loadFamilies();
}

const family = () => state.families.find((f) => f.model_name === $("launch-family").value);

async function loadFamilies() {
  try {
    state.families = await request("/v1/model_registrations/LLM", { params: { detailed: "true" } });
  } catch (error) {
    toast(`registrations: ${error.message}`);
    return;
  }
  const select = $("launch-family");
  const current = select.value;
  select.replaceChildren(...state.families.map((f) =>
    el("option", { value: f.model_name, textContent: f.is_builtin ? f.model_name : `${f.model_name} (yours)` })));
  if (state.families.some((f) => f.model_name === current)) select.value = current;
  await selectFamily();
}

async function selectFamily() {
  const chosen = family();
  if (!chosen) return;
  if (!(chosen.model_name in state.runnable)) {
    // what this server can run (kept once known); without it only the registry's rules apply
    const runnable = await request(`/v1/engines/${encodeURIComponent(chosen.model_name)}`).catch(() => null);
    if (runnable) state.runnable[chosen.model_name] = runnable;
  }
  render();
}

function fillSelect(select, options, value) {
  select.replaceChildren(...options.map((o) =>
    el("option", { value: o.value, textContent: o.value, disabled: !o.ok, title: o.why })));
  select.value = value ?? "";
}

// Unavailable options, grouped by reason: "4-bit, 8-bit: vLLM serves pytorch only with quantization none".
function reasons(options) {
  const byWhy = new Map();
  for (const o of options.filter((o) => !o.ok)) byWhy.set(o.why, [...(byWhy.get(o.why) ?? []), o.value]);
  return [...byWhy].map(([why, values]) => `${values.join(", ")}: ${why}`).join("\n");
}

function render() {
  const chosen = family();
  if (!chosen) return;
  const { options, pick, spec } = choices(chosen, state.pick, state.runnable[chosen.model_name] ?? null);
  state.pick = pick;
  for (const field of FIELDS) {
    fillSelect($(SELECTS[field]), options[field], pick[field]);
    document.querySelector(`[data-why="${field}"]`).textContent = reasons(options[field]);
  }
  $("launch-submit").disabled = !spec;
  $("launch-summary").textContent = spec
    ? `${chosen.model_name} ${pick.format} ${pick.size}B ${pick.quantization} on ${pick.engine} · ${spec.model_id}`
    : "no spec of this family can be launched here";
}

function launchBody() {
  const text = (id) => $(id).value.trim() || null;
  return {
    model_name: family().model_name,
    model_engine: state.pick.engine,
    model_format: state.pick.format,
    model_size_in_billions: Number(state.pick.size),
    quantization: state.pick.quantization,
    model_uid: text("launch-uid"),
    replica: Number($("launch-replica").value || 1),
    n_gpu: scalar(text("launch-n-gpu") ?? "auto"),
    download_hub: text("launch-hub"),
    model_path: text("launch-path"),
    ...parseOptions($("launch-options").value),
  };
}

async function launch() {
  $("launch-submit").disabled = true;
  try {
    const body = launchBody();
    const { model_uid: uid } = await request("/v1/models", { method: "POST", params: { wait_ready: "false" }, body });
    emit("models-changed");
    watch(uid);
  } catch (error) {
    refused(error.message);
  } finally {
    render();
  }
}

function refused(message) {
  state.watching = null;
  $("launch-watch").hidden = false;
  $("launch-watch-title").textContent = "Launch refused";
  for (const id of ["launch-progress", "launch-cancel", "launch-chat"]) $(id).hidden = true;
  showStatus("error", message);
}

function showStatus(status, text) {
  const line = $("launch-status");
  line.dataset.status = status;
  line.textContent = text;
}

function describeProgress(info) {
  const percent = Math.round((info.progress ?? 0) * 100);
  if (info.status === "downloading") return `downloading… ${percent}%`;
  if (info.status === "loading") return "loading weights…";
  if (info.status === "ready") return `ready on ${info.device ?? "?"} (${info.dtype ?? "?"})`;
  return `error: ${info.error ?? "unknown error"}`;
}

// Poll GET /v1/models/{uid} until the model is ready or has failed; a newer launch replaces the watch.
async function watch(uid) {
  state.watching = uid;
  $("launch-watch").hidden = false;
  $("launch-watch-title").textContent = uid;
  $("launch-progress").hidden = false;
  $("launch-cancel").hidden = false;
  $("launch-chat").hidden = true;
  while (state.watching === uid) {
    let info;
    try {
      info = await request(`/v1/models/${encodeURIComponent(uid)}`);
    } catch (error) {
      const gone = error instanceof ApiError && error.status === 404;
      showStatus("error", gone ? `${uid} is no longer running (cancelled or terminated)` : error.message);
      break;
    }
    $("launch-progress").value = info.progress ?? 0;
    showStatus(info.status, describeProgress(info));
    if (info.status === "ready" || info.status === "error") {
      $("launch-chat").hidden = info.status !== "ready";
      $("launch-chat").onclick = () => emit("select-model", uid);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  $("launch-cancel").hidden = true;
  emit("models-changed");
}

async function cancel() {
  const uid = state.watching;
  if (!uid) return;
  try {
    await request(`/v1/models/${encodeURIComponent(uid)}/cancel`, { method: "POST" });
  } catch (error) {
    toast(error.message);
  }
}
