// A chat conversation as data, and the OpenAI request it becomes. No DOM here.
//
// A turn is {role: "user", text, images: [{url, detail}]} or {role: "assistant", text}. Images stay in their turn,
// so every later request sends the whole history with its images again (the server keeps no conversation state).

// The tile budget of one message: "low" marks that message's images detail: "low" (1 tile, kept for later turns);
// "custom" sets the request's max_tiles, which the API applies to every other image in the request.
export function tileFields(tiles) {
  if (tiles.mode === "custom") return { max_tiles: tiles.maxTiles };
  return {};
}

export function imagePart(image) {
  const imageUrl = image.detail ? { url: image.url, detail: image.detail } : { url: image.url };
  return { type: "image_url", image_url: imageUrl };
}

export function toMessages(history, system) {
  const messages = system ? [{ role: "system", content: system }] : [];
  for (const turn of history) {
    if (turn.role === "user" && turn.images.length) {
      messages.push({ role: "user", content: [...turn.images.map(imagePart), { type: "text", text: turn.text }] });
    } else {
      messages.push({ role: turn.role, content: turn.text });
    }
  }
  return messages;
}

// The body of POST /v1/chat/completions for the next answer.
export function chatRequest({ model, history, system, temperature, maxTokens, tiles }) {
  return {
    model,
    messages: toMessages(history, system),
    stream: true,
    stream_options: { include_usage: true },
    ...(Number.isFinite(temperature) ? { temperature } : {}),
    ...(Number.isFinite(maxTokens) ? { max_tokens: maxTokens } : {}),
    ...tileFields(tiles),
  };
}

export function usageText(usage, seconds) {
  const time = seconds === undefined ? "" : ` · ${seconds.toFixed(1)} s`;
  if (!usage) return `no usage reported${time}`;
  return `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens} tokens${time}`;
}

const FINISH = { stop: "", length: "stopped at max tokens", abort: "aborted by the server" };
export const finishText = (reason) => FINISH[reason] ?? (reason ? `finished: ${reason}` : "");
