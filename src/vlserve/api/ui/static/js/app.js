// Wires the page together: the tabs (one per #hash), the API key dialog, and each view's module.

import { apiKey, onKeyNeeded, resetKeyPrompt } from "./api.js";
import { loadCache, initCache } from "./cache.js";
import { initChat } from "./chat.js";
import { $, emit } from "./dom.js";
import { initFamilies, loadFamilies } from "./families.js";
import { initLaunch } from "./launch.js";
import { initModels } from "./models.js";

const TABS = ["chat", "launch", "models", "cache", "families"];
const ON_SHOW = { cache: loadCache, families: loadFamilies };

function showTab() {
  const name = TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "chat";
  for (const tab of TABS) $(tab).hidden = tab !== name;
  for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("active", link.dataset.tab === name);
  ON_SHOW[name]?.();
}

// The dialog stores the key typed (or forgets it) and resolves to the key now in use for "Use key", else null.
// A second caller while it is open waits for the same answer.
function keyDialog(reason) {
  const dialog = $("key-dialog");
  const closed = new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (dialog.open) return closed.then(() => apiKey.get());
  $("key-reason").textContent = reason;
  $("key-input").value = "";
  dialog.returnValue = "";
  dialog.showModal();
  return closed.then(() => {
    const key = $("key-input").value.trim();
    if (dialog.returnValue === "clear") apiKey.clear();
    if (dialog.returnValue === "ok" && key) apiKey.set(key);
    showKeyState();
    return dialog.returnValue === "ok" && key ? key : null;
  });
}

function showKeyState() {
  $("key-button").textContent = apiKey.get() ? "API key ✓" : "API key";
}

async function changeKey() {
  await keyDialog("Set the API key this tab sends as Authorization: Bearer.");
  resetKeyPrompt();
  showKeyState();
  emit("models-changed");
  emit("families-changed");
  showTab();
}

onKeyNeeded((reason) => keyDialog(`This server needs an API key (${reason}).`));
$("key-button").addEventListener("click", changeKey);
window.addEventListener("hashchange", showTab);
showKeyState();
initChat();
initCache();
initFamilies();
initModels();
showTab();
initLaunch();
