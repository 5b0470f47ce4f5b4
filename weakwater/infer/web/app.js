// WeakWater web chat: talks to this server's OpenAI-compatible /v1/chat/completions with SSE streaming.
// Model text is only ever inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
let history = [];      // [{role, content}] of finished turns
let modelName = null;
let controller = null; // AbortController of the reply being streamed

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text) { $("status").textContent = text; }

async function loadModel() {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    modelName = body.data[0].id;
    $("model-name").textContent = modelName;
  } catch (err) {
    $("model-name").textContent = "model unavailable: " + err.message;
  }
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

// An assistant bubble with a collapsible thinking block (shown only once reasoning arrives).
function addAssistant() {
  const div = addMessage("assistant", "");
  const details = document.createElement("details");
  details.open = true;
  details.hidden = true;
  const summary = document.createElement("summary");
  summary.textContent = "Thinking…";
  const thinking = document.createElement("div");
  thinking.className = "thinking";
  details.append(summary, thinking);
  const answer = document.createElement("div");
  answer.className = "answer";
  div.append(details, answer);
  return { div, details, summary, thinking, answer };
}

function number(id, fallback) {
  const v = parseFloat($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

// Yields parsed JSON objects from an SSE response body ("data: {...}\n\n", ends with "data: [DONE]").
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function send(text) {
  const system = $("system").value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(history, [{ role: "user", content: text }]);
  addMessage("user", text);
  const view = addAssistant();
  view.div.classList.add("streaming");
  let reasoning = "", content = "", finish = null;
  controller = new AbortController();
  $("send").hidden = true;
  $("stop").hidden = false;
  setStatus("generating…");
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: modelName || undefined,
        messages,
        stream: true,
        temperature: number("temperature", 0.7),
        top_p: number("top-p", 0.9),
        max_tokens: Math.max(1, Math.round(number("max-tokens", 256))),
      }),
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : res.status + " " + res.statusText);
    }
    for await (const chunk of sseEvents(res)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      if (delta.reasoning_content) {
        reasoning += delta.reasoning_content;
        view.details.hidden = false;
        view.thinking.textContent = reasoning;
      }
      if (delta.content) {
        content += delta.content;
        view.answer.textContent = content;
        if (reasoning) { view.details.open = false; view.summary.textContent = "Thought process"; }
      }
      if (choice.finish_reason) finish = choice.finish_reason;
      view.div.scrollIntoView({ block: "end" });
    }
    if (reasoning) view.summary.textContent = "Thought process";
    history.push({ role: "user", content: text }, { role: "assistant", content });
    setStatus(finish === "length" ? "stopped: max tokens reached" : "");
  } catch (err) {
    if (err.name === "AbortError") {
      history.push({ role: "user", content: text }, { role: "assistant", content });
      setStatus("stopped");
    } else {
      view.div.classList.add("error");
      view.answer.textContent = (content ? content + "\n\n" : "") + "Error: " + err.message;
      setStatus("");
    }
  } finally {
    view.div.classList.remove("streaming");
    view.div.classList.add("done");
    controller = null;
    $("send").hidden = false;
    $("stop").hidden = true;
  }
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  history = [];
  log.textContent = "";
  setStatus("");
});
$("api-key").addEventListener("change", loadModel);
loadModel();
