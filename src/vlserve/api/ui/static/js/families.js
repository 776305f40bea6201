// The Families tab: registered model families (built-in and the user's own), register and unregister,
// as `vlserve registrations / register / unregister` do.

import { request } from "./api.js";
import { $, el, emit, toast } from "./dom.js";

export function initFamilies() {
  $("register-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("register-text").value = await file.text();
  });
  $("register-form").addEventListener("submit", (event) => {
    event.preventDefault();
    register();
  });
}

export async function loadFamilies() {
  try {
    const families = await request("/v1/model_registrations/LLM", { params: { detailed: "true" } });
    $("families-rows").replaceChildren(...families.map(row));
  } catch (error) {
    toast(`registrations: ${error.message}`);
  }
}

function row(f) {
  const remove = el("button", { type: "button", className: "danger", textContent: "Unregister" });
  remove.addEventListener("click", () => unregister(f.model_name));
  return el("tr", { dataset: { name: f.model_name } },
    el("td", { textContent: f.model_name }),
    el("td", { textContent: f.is_builtin ? "yes" : "no" }),
    el("td", { textContent: (f.model_lang ?? []).join(", ") }),
    el("td", { textContent: (f.model_ability ?? []).join(", ") }),
    el("td", { textContent: f.context_length ?? "" }),
    el("td", { textContent: (f.model_specs ?? []).length }),
    el("td", { className: "actions" }, f.is_builtin ? null : remove));
}

async function register() {
  const text = $("register-text").value.trim();
  if (!text) {
    toast("Choose a family JSON file or paste one.");
    return;
  }
  try {
    await request("/v1/model_registrations/LLM", { method: "POST", body: { model: text, persist: $("register-persist").checked } });
    toast("Registered", "info");
    $("register-text").value = "";
  } catch (error) {
    toast(error.message);
    return;
  }
  emit("families-changed");
  await loadFamilies();
}

async function unregister(name) {
  if (!window.confirm(`Unregister ${name}? Running models keep running.`)) return;
  try {
    await request(`/v1/model_registrations/LLM/${encodeURIComponent(name)}`, { method: "DELETE" });
  } catch (error) {
    toast(error.message);
  }
  emit("families-changed");
  await loadFamilies();
}
