// The Chat tab: talk to a running model with text and images; answers stream in and can be stopped.

import { streamChat } from "./api.js";
import { chatRequest, finishText, usageText } from "./conversation.js";
import { $, el, on, toast } from "./dom.js";
import { specLabel } from "./models.js";

const state = { history: [], attachments: [], controller: null, models: [] };

export function initChat() {
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { // IME composition keeps Enter
      event.preventDefault();
      send();
    }
  });
  $("chat-stop").addEventListener("click", () => state.controller?.abort());
  $("chat-new").addEventListener("click", newConversation);
  $("chat-tiles").addEventListener("change", () => { $("chat-max-tiles").hidden = $("chat-tiles").value !== "custom"; });
  $("chat-model").addEventListener("change", showModelHint);
  wireAttachments();
  on("models", showModels);
  on("select-model", (uid) => {
    $("chat-model").value = uid;
    showModelHint();
    location.hash = "#chat";
  });
}

// -- the model picker ------------------------------------------------------------------------------------------

function showModels(models) {
  state.models = models;
  const select = $("chat-model");
  const current = select.value;
  const options = models.map((m) => el("option", {
    value: m.id, disabled: m.status !== "ready",
    textContent: m.status === "ready" ? m.id : `${m.id} (${m.status})`,
  }));
  select.replaceChildren(...options);
  const ready = models.filter((m) => m.status === "ready").map((m) => m.id);
  select.value = ready.includes(current) ? current : ready[0] ?? "";
  showModelHint();
}

function showModelHint() {
  const model = state.models.find((m) => m.id === $("chat-model").value);
  $("chat-model-hint").textContent = model
    ? `${specLabel(model)} on ${model.model_engine}`
    : "No model is ready. Launch one from the Launch tab.";
}

// -- attachments: file picker, drag-and-drop, paste ------------------------------------------------------------

function wireAttachments() {
  $("chat-files").addEventListener("change", (event) => {
    attach(event.target.files);
    event.target.value = "";
  });
  const form = $("chat-form");
  form.addEventListener("dragover", (event) => {
    event.preventDefault();
    form.classList.add("dropping");
  });
  form.addEventListener("dragleave", () => form.classList.remove("dropping"));
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    form.classList.remove("dropping");
    attach(event.dataTransfer.files);
  });
  $("chat-input").addEventListener("paste", (event) => {
    const files = [...event.clipboardData.files].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      event.preventDefault();
      attach(files);
    }
  });
}

const readAsDataUrl = (file) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(file);
});

async function attach(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) {
      toast(`${file.name} is not an image`);
      continue;
    }
    state.attachments.push({ name: file.name, url: await readAsDataUrl(file) });
  }
  showAttachments();
}

function showAttachments() {
  $("chat-attachments").replaceChildren(...state.attachments.map((a, i) => {
    const remove = el("button", { type: "button", className: "remove", textContent: "×", title: `remove ${a.name}` });
    remove.addEventListener("click", () => {
      state.attachments.splice(i, 1);
      showAttachments();
    });
    return el("li", {}, el("img", { src: a.url, alt: a.name, title: a.name }), remove);
  }));
}

// -- the conversation ------------------------------------------------------------------------------------------

function newConversation() {
  state.controller?.abort();
  state.history = [];
  $("chat-log").replaceChildren();
}

function bubble(turn) {
  const images = (turn.images ?? []).map((img) => el("img", { src: img.url, alt: "attached image" }));
  const node = el("li", { className: `turn ${turn.role}` },
    images.length ? el("div", { className: "images" }, ...images) : null,
    el("div", { className: "text", textContent: turn.text }),
    el("div", { className: "meta" }));
  $("chat-log").append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function tiles() {
  const mode = $("chat-tiles").value;
  return { mode, maxTiles: Number($("chat-max-tiles").value) };
}

function number(id) {
  const text = $(id).value.trim();
  return text === "" ? NaN : Number(text);
}

function setBusy(busy) {
  $("chat-send").disabled = busy;
  $("chat-stop").hidden = !busy;
  $("chat-form").classList.toggle("busy", busy);
}

function takeComposer() {
  const mode = tiles().mode;
  const turn = {
    role: "user",
    text: $("chat-input").value.trim(),
    images: state.attachments.map((a) => ({ url: a.url, ...(mode === "low" ? { detail: "low" } : {}) })),
  };
  $("chat-input").value = "";
  state.attachments = [];
  showAttachments();
  return turn;
}

async function send() {
  const model = $("chat-model").value;
  if (state.controller) return;
  if (!model) {
    toast("No model is ready to chat with; launch one first.");
    return;
  }
  if (!$("chat-input").value.trim() && !state.attachments.length) return;
  const turn = takeComposer();
  state.history.push(turn);
  bubble(turn);
  const body = chatRequest({
    model, history: state.history, system: $("chat-system").value.trim(),
    temperature: number("chat-temperature"), maxTokens: number("chat-max-tokens"), tiles: tiles(),
  });
  await answer(body);
}

// Stream one answer into a new bubble. A stopped answer keeps its text and stays in the history; a request
// that brought back nothing (failed, or stopped at once) takes its question out of the history.
async function answer(body) {
  const history = state.history; // "New conversation" during the stream replaces state.history; this one ends here
  const reply = { role: "assistant", text: "" };
  const node = bubble(reply);
  const text = node.querySelector(".text");
  const meta = node.querySelector(".meta");
  const started = performance.now();
  let usage = null;
  let finish = null;
  state.controller = new AbortController();
  setBusy(true);
  node.dataset.state = "streaming";
  try {
    for await (const chunk of streamChat(body, state.controller.signal)) {
      for (const choice of chunk.choices ?? []) {
        if (choice.delta?.content) {
          reply.text += choice.delta.content;
          text.textContent = reply.text;
          node.scrollIntoView({ block: "end" });
        }
        finish = choice.finish_reason ?? finish;
      }
      usage = chunk.usage ?? usage;
    }
    node.dataset.state = "done";
    meta.textContent = [usageText(usage, (performance.now() - started) / 1000), finishText(finish)].filter(Boolean).join(" · ");
  } catch (error) {
    const stopped = error.name === "AbortError";
    node.dataset.state = stopped ? "stopped" : "error";
    meta.textContent = stopped ? `stopped after ${reply.text.length} characters` : `error: ${error.message}`;
  } finally {
    state.controller = null;
    setBusy(false);
  }
  if (reply.text || node.dataset.state === "done") history.push(reply);
  else history.pop(); // nothing came back: the question leaves the history with its unanswered turn
}
