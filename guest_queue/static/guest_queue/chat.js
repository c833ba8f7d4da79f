// The guest chat: asks the queue API, streams the answer, shows the guest's place in line.
// Plain ES module, no dependencies. Text from the server is only ever inserted as text.

const urls = JSON.parse(document.getElementById("gq-urls").textContent);
const strings = JSON.parse(document.getElementById("gq-strings").textContent);

const form = document.getElementById("gq-form");
const input = document.getElementById("gq-input");
const send = document.getElementById("gq-send");
const stop = document.getElementById("gq-stop");
const conversation = document.getElementById("gq-conversation");
const queueWidget = document.getElementById("gq-queue");

const STATUS_POLL_MS = 5000;
// A dropped connection is resumed with these pauses (the server keeps the request ~20 s).
const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000];
let controller = null;
let current = null; // the turn being answered: its request id lets Stop cancel it
// Earlier turns, sent with each question so the assistant can follow the conversation.
const history = [];

// The queue widget shows the last figures from queue/status, but never fewer than this
// guest's own events prove: a guest told "you are number 3 in line" is one of at least
// 3 waiting, a guest whose answer is being written holds one of the answering slots.
const queueFigures = { active: 0, waiting: 0, known: false };
const ownPlace = { active: 0, waiting: 0 };
let ownChanges = 0;

function format(template, values) {
  return template.replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Paragraphs and simple lists from plain text, built with DOM nodes: no HTML is parsed.
export function renderText(container, text) {
  container.replaceChildren();
  for (const block of text.split(/\n\s*\n/)) {
    const lines = block.split("\n").filter((line) => line.trim());
    if (!lines.length) continue;
    const bullets = lines.every((line) => /^\s*[-*•]\s+/.test(line));
    const numbers = lines.every((line) => /^\s*\d+[.)]\s+/.test(line));
    if (bullets || numbers) {
      const list = el(numbers ? "ol" : "ul");
      for (const line of lines) list.append(el("li", "", line.replace(/^\s*([-*•]|\d+[.)])\s+/, "")));
      container.append(list);
    } else {
      container.append(el("p", "", lines.join("\n")));
    }
  }
}

function addTurn(question) {
  const turn = el("li", "gq-turn");
  const asked = el("div", "gq-question");
  asked.append(el("span", "gq-who", strings.you), el("p", "", question));
  const answer = el("div", "gq-answer");
  const status = el("p", "gq-status");
  status.setAttribute("role", "status");
  const body = el("div", "gq-body");
  body.setAttribute("aria-live", "polite");
  const extras = el("div", "gq-extras");
  answer.append(el("span", "gq-who", strings.assistant), status, body, extras);
  turn.append(asked, answer);
  conversation.append(turn);
  turn.scrollIntoView({ block: "end", behavior: "smooth" });
  return { turn, status, body, extras, text: "", requestId: null, seq: 0, shown: null };
}

function setBusy(busy) {
  input.disabled = busy;
  send.disabled = busy;
  stop.hidden = !busy;
  stop.disabled = false;
  if (!busy) input.focus();
}

function showSuggestions(view, questions) {
  if (!questions || !questions.length) return;
  const box = el("div", "gq-suggestions");
  box.append(el("p", "gq-suggested-label", strings.suggested));
  for (const question of questions) {
    const button = el("button", "gq-suggestion", question);
    button.type = "button";
    button.addEventListener("click", () => ask(question));
    box.append(button);
  }
  view.extras.append(box);
}

function showRetry(view, question) {
  const button = el("button", "gq-retry", strings.retry);
  button.type = "button";
  button.addEventListener("click", () => {
    view.turn.remove();
    ask(question);
  });
  view.extras.append(button);
}

function setStatus(view, text, className) {
  view.status.textContent = text;
  view.status.className = className;
}

function handleEvent(view, event) {
  // A resumed stream may repeat nothing, but never show an event twice anyway.
  if (event.seq !== undefined) {
    if (event.seq <= view.seq) return null;
    view.seq = event.seq;
  }
  view.requestId = event.request_id || view.requestId;
  if (view.stopWanted && view.requestId) {
    // Stop was pressed before the request had an id: cancel it now, read no further.
    cancelRequest(view.requestId);
    controller?.abort();
    return "stopped";
  }
  const outcome = applyEvent(view, event);
  if (event.event === "queued" || event.event === "processing") {
    view.shown = [view.status.textContent, view.status.className];
  }
  return outcome;
}

// The wait as guests read it: one figure when the range is narrow, else the range
// ("about 1–3 min"); servers that send no range get the one figure.
function waitText(position, seconds, range) {
  const [low, high] = Array.isArray(range) ? range : [seconds, seconds];
  const wide = high - low >= 10 && high >= 1.5 * Math.max(low, 1);
  if (!wide) return format(strings.positionEstimate, { position, seconds: Math.ceil(seconds) });
  if (high >= 90) {
    const lowMin = Math.max(1, Math.floor(low / 60));
    const highMin = Math.max(lowMin + 1, Math.ceil(high / 60));
    return format(strings.positionRangeMin, { position, low: lowMin, high: highMin });
  }
  return format(strings.positionRangeSec, { position, low: Math.floor(low), high: Math.ceil(high) });
}

function applyEvent(view, event) {
  const data = event.data;
  switch (event.event) {
    case "queued": {
      const position = data.queue_position;
      // The event's figure of the whole line is newer than the last poll's.
      if (Number.isInteger(data.queue_size)) queueFigures.waiting = data.queue_size;
      setOwnPlace(0, position);
      const seconds = data.estimated_wait_sec;
      if (position <= 1 && !seconds) view.status.textContent = strings.next;
      else if (seconds) view.status.textContent = waitText(position, seconds, data.estimated_wait_range_sec);
      else view.status.textContent = format(strings.position, { position });
      view.status.className = "gq-status gq-waiting";
      break;
    }
    case "processing":
      setOwnPlace(1, 0);
      view.status.textContent = strings.processing;
      view.status.className = "gq-status gq-processing";
      break;
    case "answer_chunk":
      view.text += data;
      renderText(view.body, view.text);
      break;
    case "workflow_complete":
      view.status.textContent = "";
      view.status.className = "gq-status";
      showSuggestions(view, data.suggested_questions);
      return "done";
    case "timeout":
      view.status.textContent = strings.timeout;
      view.status.className = "gq-status gq-warning";
      return "done";
    case "error":
      view.status.textContent = format(strings.error, { message: data.error });
      view.status.className = "gq-status gq-error";
      return "failed";
  }
  return null;
}

// What a 429 says while the guest waits, by its code (the line is full by default).
const WAIT_MESSAGES = { client_limit: "clientLimit", rate_limited: "rateLimited" };

async function countdown(view, seconds, code) {
  const message = strings[WAIT_MESSAGES[code]] || strings.busy;
  for (let left = seconds; left > 0; left--) {
    view.status.textContent = format(message, { seconds: left });
    view.status.className = "gq-status gq-warning";
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (controller?.signal.aborted) return false;
  }
  return true;
}

async function ask(question, view = null) {
  question = question.trim();
  if (!question || controller) return;
  view = view || addTurn(question);
  controller = new AbortController();
  current = view;
  setBusy(true);
  let outcome = null;
  view.stopWanted = false;
  try {
    view.awaitingId = true; // from here until the first event, Stop has no id to cancel
    const response = await fetch(urls.chat, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        query: question,
        resumable: true,
        language: document.documentElement.lang || undefined,
        history: history.length ? history : undefined,
      }),
      signal: controller.signal,
    });
    if (!response.ok) view.awaitingId = false; // refused: nothing to cancel
    if (response.status === 429) {
      const wait = Math.max(1, parseInt(response.headers.get("Retry-After") || "5", 10));
      const refusal = await response.json().catch(() => ({}));
      if (!view.stopWanted && (await countdown(view, wait, refusal.code))) {
        controller = null;
        return ask(question, view);
      }
      outcome = "stopped";
    } else if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      view.status.textContent = format(strings.error, { message: body.error || `HTTP ${response.status}` });
      view.status.className = "gq-status gq-error";
      outcome = "failed";
    } else {
      outcome = await readStream(view, response).catch(() => null);
      if (!outcome && !controller.signal.aborted && view.requestId) outcome = await reconnect(view);
      if (!outcome && !controller.signal.aborted) {
        setStatus(view, strings.connection, "gq-status gq-error");
        outcome = "failed";
      }
    }
  } catch (error) {
    if (controller?.signal.aborted) {
      outcome = "stopped";
    } else {
      view.status.textContent = strings.connection;
      view.status.className = "gq-status gq-error";
      outcome = "failed";
    }
  } finally {
    view.awaitingId = false;
    if (controller?.signal.aborted || view.stopWanted) outcome = "stopped";
    controller = null;
    current = null;
    setBusy(false);
    if (ownPlace.active || ownPlace.waiting) setOwnPlace(0, 0);
  }
  if (outcome === "done") remember(question, view.text);
  if (outcome === "stopped") {
    view.status.textContent = strings.stopped;
    view.status.className = "gq-status";
  }
  if (outcome === "failed" || outcome === "stopped" || outcome === null) showRetry(view, question);
}

// Re-attach to the request after a dropped connection: the events after the last one shown.
async function reconnect(view) {
  let attempt = 0;
  while (attempt < RECONNECT_DELAYS_MS.length) {
    setStatus(view, strings.reconnecting, "gq-status gq-warning");
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_DELAYS_MS[attempt]));
    if (controller.signal.aborted) return "stopped";
    attempt += 1;
    try {
      const url = `${urls.chat}/${encodeURIComponent(view.requestId)}/events?after=${view.seq}`;
      const response = await fetch(url, { signal: controller.signal });
      if (response.status === 404 || response.status === 410) return null; // it is gone
      if (!response.ok) continue;
      if (view.shown) setStatus(view, ...view.shown);
      const seen = view.seq;
      const outcome = await readStream(view, response);
      if (outcome) return outcome;
      if (view.seq > seen) attempt = 0; // it got somewhere: start the pauses over
    } catch {
      if (controller.signal.aborted) return "stopped";
    }
  }
  return null;
}

function remember(question, answer) {
  const max = urls.maxHistoryTurns ?? 20;
  const chars = urls.maxChars ?? 2000;
  history.push({ role: "user", content: question.slice(0, chars) });
  if (answer.trim()) history.push({ role: "assistant", content: answer.slice(0, chars) });
  history.splice(0, Math.max(0, history.length - max));
}

// The same framing as the seed's reference client: messages end with a blank line,
// each is one "data:" line of JSON; comments (": keep-alive") are skipped.
async function readStream(view, response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    const { done, value } = await reader.read();
    if (done) return null;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      if (!message.startsWith("data:")) continue;
      // A resumed stream adds an "id:" line after the data line.
      const outcome = handleEvent(view, JSON.parse(message.split("\n")[0].slice(5)));
      if (outcome) return outcome;
    }
  }
}

function renderQueue() {
  if (!queueFigures.known && !ownPlace.active && !ownPlace.waiting) return;
  queueWidget.textContent = format(strings.queueWidget, {
    active: Math.max(queueFigures.active, ownPlace.active),
    waiting: Math.max(queueFigures.waiting, ownPlace.waiting),
  });
}

// Called on each of the guest's own queue events: show them at once; when the guest moves
// from waiting to answered to done (not on every step forward in line), ask for the rest.
function setOwnPlace(active, waiting) {
  const moved = active !== ownPlace.active || (waiting > 0) !== (ownPlace.waiting > 0);
  ownPlace.active = active;
  ownPlace.waiting = waiting;
  renderQueue();
  if (moved) {
    ownChanges += 1;
    refreshQueue();
  }
}

async function refreshQueue() {
  const asked = ownChanges;
  try {
    const response = await fetch(urls.status, { headers: { Accept: "application/json" } });
    const status = await response.json();
    // Figures asked for before the guest's latest event may predate it; the refresh
    // that event started brings newer ones.
    if (asked !== ownChanges) return;
    queueFigures.active = status.active_requests;
    queueFigures.waiting = status.queue_size;
    queueFigures.known = true;
    renderQueue();
  } catch {
    queueWidget.textContent = strings.queueUnknown;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const question = input.value;
  input.value = "";
  ask(question);
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
// Closing the connection no longer stops a resumable request: cancel it on purpose.
// Pressed before the first event (no id yet), the request may already be accepted and
// would outlive a closed connection: remember the Stop, cancel once the id is known.
stop.addEventListener("click", () => {
  if (!current) return;
  const requestId = current.requestId;
  if (!requestId && current.awaitingId) {
    current.stopWanted = true;
    stop.disabled = true;
    return;
  }
  controller?.abort();
  if (requestId) cancelRequest(requestId);
});

function cancelRequest(requestId) {
  fetch(`${urls.chat}/${encodeURIComponent(requestId)}/cancel`, { method: "POST" }).catch(() => {});
}
// The queue widget polls only while the tab is visible.
setInterval(() => document.hidden || refreshQueue(), STATUS_POLL_MS);
document.addEventListener("visibilitychange", () => document.hidden || refreshQueue());
refreshQueue();
input.focus();
