// Small DOM helpers shared by the views.

export const $ = (id) => document.getElementById(id);

// el("td", {className: "x", dataset: {uid}}, "text", child) -> element; props are assigned, children appended.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { dataset, ...rest } = props;
  Object.assign(node, rest);
  Object.assign(node.dataset, dataset ?? {});
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

let toastTimer = null;

export function toast(message, kind = "error") {
  const box = $("toast");
  box.textContent = message;
  box.className = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 8000 : 3000);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

// A views' way to say "something changed" to the others, without importing each other.
export const emit = (name, detail) => window.dispatchEvent(new CustomEvent(name, { detail }));
export const on = (name, handler) => window.addEventListener(name, (event) => handler(event.detail));
