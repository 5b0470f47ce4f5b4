// WeakWater web chat: talks to this server's OpenAI-compatible /v1/chat/completions with SSE streaming.
// Model text is only ever inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
let history = [];      // messages of finished exchanges (tool calls and results included)
let serverTools = [];  // tools this server can run (GET /v1/tools): offered to the model when enabled
let modelName = null;
let controller = null; // AbortController of the reply being streamed

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text) { $("status").textContent = text; }

function toolsOn() { return serverTools.length > 0 && $("use-tools").checked; }

async function loadTools() {
  try {
    const res = await fetch("/v1/tools", { headers: headers() });
    const body = await res.json();
    serverTools = res.ok ? body.data : [];
  } catch (err) {
    serverTools = [];
  }
  $("tools-label").hidden = serverTools.length === 0;
  $("tool-names").textContent = serverTools.map((t) => t.function.name).join(", ");
}

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

// Streams one reply into `view`; returns {content, finish, calls} (calls: OpenAI tool_calls, joined by index).
async function streamReply(messages, view) {
  let reasoning = "", content = "", finish = null;
  const calls = [];
  const body = {
    model: modelName || undefined,
    messages,
    stream: true,
    temperature: number("temperature", 0.7),
    top_p: number("top-p", 0.9),
    max_tokens: Math.max(1, Math.round(number("max-tokens", 256))),
  };
  if (toolsOn()) body.tools = serverTools;
  const res = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(), signal: controller.signal, body: JSON.stringify(body),
  });
  if (!res.ok) {
    const err = await res.json().catch(() => ({}));
    throw new Error(err.error ? err.error.message : res.status + " " + res.statusText);
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
    for (const part of delta.tool_calls || []) {  // the first piece has id and name, later ones more arguments
      const call = calls[part.index] || (calls[part.index] = { id: "", type: "function", function: { name: "", arguments: "" } });
      if (part.id) call.id = part.id;
      if (part.function && part.function.name) call.function.name += part.function.name;
      if (part.function && part.function.arguments) call.function.arguments += part.function.arguments;
    }
    if (choice.finish_reason) finish = choice.finish_reason;
    view.div.scrollIntoView({ block: "end" });
  }
  if (reasoning) view.summary.textContent = "Thought process";
  return { content, finish, calls: calls.filter(Boolean) };
}

// A tool call or its result, dimmed, inside the assistant bubble that made the call.
function addToolLine(view, text, kind) {
  const line = document.createElement("div");
  line.className = "tool " + kind;
  line.textContent = text;
  view.div.insertBefore(line, view.answer);
  return line;
}

async function runTool(call) {
  const res = await fetch("/v1/tools/call", {
    method: "POST", headers: headers(), signal: controller.signal,
    body: JSON.stringify({ name: call.function.name, arguments: call.function.arguments }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) return JSON.stringify({ error: body.error ? body.error.message : res.statusText });
  return body.content;
}

const MAX_TOOL_ROUNDS = 4;

async function send(text) {
  const system = $("system").value.trim();
  const head = system ? [{ role: "system", content: system }] : [];
  const turn = [{ role: "user", content: text }];  // this exchange: the message, calls, results, reply
  addMessage("user", text);
  let view = addAssistant();
  view.div.classList.add("streaming");
  let finish = null, content = "";
  controller = new AbortController();
  $("send").hidden = true;
  $("stop").hidden = false;
  setStatus("generating…");
  try {
    for (let round = 0; ; round++) {
      const reply = await streamReply(head.concat(history, turn), view);
      content = reply.content;
      finish = reply.finish;
      if (finish !== "tool_calls" || !reply.calls.length || round === MAX_TOOL_ROUNDS) {
        turn.push({ role: "assistant", content });
        break;
      }
      turn.push({ role: "assistant", content: content || null, tool_calls: reply.calls });
      for (const call of reply.calls) {
        addToolLine(view, "→ " + call.function.name + "(" + call.function.arguments + ")", "call");
        const result = await runTool(call);
        addToolLine(view, "← " + result, "result");
        turn.push({ role: "tool", tool_call_id: call.id, content: result });
      }
      view.div.classList.remove("streaming");
      view.div.classList.add("called", "done");
      view = addAssistant();
      view.div.classList.add("streaming");
    }
    history.push(...turn);
    setStatus(finish === "length" ? "stopped: max tokens reached" : "");
  } catch (err) {
    if (err.name === "AbortError") {
      if (turn[turn.length - 1].role !== "assistant") turn.push({ role: "assistant", content });
      history.push(...turn);
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
$("api-key").addEventListener("change", () => { loadModel(); loadTools(); });
loadModel();
loadTools();
