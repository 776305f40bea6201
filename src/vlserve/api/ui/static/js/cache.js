// The Cache tab: downloaded models with their size, and removal.

import { request } from "./api.js";
import { $, el, formatBytes, toast } from "./dom.js";

export function initCache() {
  $("cache-refresh").addEventListener("click", loadCache);
}

export async function loadCache() {
  let rows;
  try {
    ({ list: rows } = await request("/v1/cache/models"));
  } catch (error) {
    toast(`cache: ${error.message}`);
    return;
  }
  $("cache-rows").replaceChildren(...rows.map(row));
  $("cache-empty").hidden = rows.length > 0;
}

function row(entry) {
  const remove = el("button", { type: "button", className: "danger", textContent: "Remove" });
  remove.addEventListener("click", () => removeEntry(entry));
  return el("tr", { dataset: { modelId: entry.model_id, hub: entry.hub } },
    el("td", {}, el("code", { textContent: entry.model_id })),
    el("td", { textContent: entry.hub }),
    el("td", { textContent: formatBytes(entry.size_bytes) }),
    el("td", { textContent: entry.complete ? "yes" : "partial" }),
    el("td", {}, el("code", { className: "path", textContent: entry.path })),
    el("td", { className: "actions" }, remove));
}

async function removeEntry(entry) {
  if (!window.confirm(`Delete ${entry.model_id} (${entry.hub}, ${formatBytes(entry.size_bytes)}) from the cache?`)) return;
  try {
    await request("/v1/cache/models", { method: "DELETE", params: { model_id: entry.model_id, hub: entry.hub } });
    toast(`Removed ${entry.model_id}`, "info");
  } catch (error) {
    toast(error.message);
  }
  await loadCache();
}
