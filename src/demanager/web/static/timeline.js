// An instance's timeline: its past events, then the new ones as they happen.
//
// The panel reads the last page of the event log, then follows the server-sent
// event stream from the newest id it showed, so nothing falls between the two.
// The stream is read with fetch() (EventSource cannot send the X-Auth-Token
// header) and parsed here; a dropped connection is opened again with
// Last-Event-ID after the delay the server asked for. Closing the panel aborts it.
//
// Messages come from the server but are treated as untrusted text: every value
// reaches the page through textContent, never as HTML.

import { ApiError } from "./api.js";

const SHOWN = 200; // past events shown when the panel opens
const MAX_RETRY_MS = 30000;

const KIND_LABELS = {
  created: "Created",
  queued: "Queued",
  admitted: "Admitted",
  start_requested: "Start requested",
  restart_requested: "Restart requested",
  launched: "Launched",
  ready: "Ready",
  health_lost: "Not answering",
  health_regained: "Answering again",
  auto_stop_warning: "Auto-stop soon",
  stop_requested: "Stop requested",
  stopped: "Stopped",
  failed: "Failed",
  adopted: "Adopted",
  deleted: "Deleted",
};

const TIME = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});

// A kind this console does not know yet reads as its own name, made readable.
export function kindLabel(kind) {
  const text = String(kind ?? "");
  return KIND_LABELS[text] ?? (text.charAt(0).toUpperCase() + text.slice(1)).replaceAll("_", " ");
}

// The server-sent events format (HTML standard): fed chunks of text, calls
// onMessage({ id, event, data }) at each blank line. Keeps the last id and the
// retry delay for the reconnect.
export class SSEParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.lastEventId = null;
    this.retryMs = null;
    this.#reset();
  }

  #reset() {
    this.event = "";
    this.data = [];
    this.hasData = false;
  }

  push(text) {
    this.buffer += text;
    // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
    const lines = this.buffer.split(/\r\n|\r(?!$)|\n/);
    this.buffer = lines.pop();
    for (const line of lines) this.#line(line);
  }

  #line(line) {
    if (line === "") {
      if (this.hasData) {
        this.onMessage({ id: this.lastEventId, event: this.event || "message", data: this.data.join("\n") });
      }
      this.#reset();
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "event") {
      this.event = value;
    } else if (field === "id" && !value.includes("\0")) {
      this.lastEventId = value;
    } else if (field === "retry" && /^\d+$/.test(value)) {
      this.retryMs = Number(value);
    }
  }
}

export class Timeline {
  constructor(dialog, { api, onAuthFailure }) {
    this.dialog = dialog;
    this.api = api; // a function: the session's Api changes on sign-in
    this.onAuthFailure = onAuthFailure;
    this.title = dialog.querySelector("#timeline-title");
    this.list = dialog.querySelector("#timeline-list");
    this.live = dialog.querySelector("#timeline-live");
    this.state = dialog.querySelector("#timeline-state");
    this.empty = dialog.querySelector("#timeline-empty");
    this.error = dialog.querySelector("#timeline-error");
    this.controller = null;
    this.opener = null; // where the focus goes back when the panel closes
    this.lastId = 0;
    for (const button of dialog.querySelectorAll("[data-close]")) {
      button.addEventListener("click", () => this.close());
    }
    // A non-modal panel: the table stays usable, so Escape is handled here.
    dialog.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.close();
      }
    });
    dialog.addEventListener("close", () => this.#stop());
  }

  async open(instance) {
    this.#stop();
    if (!this.dialog.contains(document.activeElement)) this.opener = document.activeElement;
    this.lastId = 0;
    this.title.textContent = `Timeline of ${instance.name}`;
    this.list.replaceChildren();
    this.empty.hidden = true;
    this.error.hidden = true;
    this.#setState("connecting", "Loading…");
    // The past is not news: screen readers hear only what arrives once it is shown.
    this.list.setAttribute("aria-busy", "true");
    if (!this.dialog.open) this.dialog.show();
    this.dialog.querySelector("[data-close]").focus();

    const controller = new AbortController();
    this.controller = controller;
    try {
      let page = await this.api().events(instance.id, { limit: SHOWN, offset: 0 });
      if (page.total > page.events.length) {
        page = await this.api().events(instance.id, { limit: SHOWN, offset: page.total - SHOWN });
      }
      if (controller.signal.aborted) return;
      for (const event of page.events) this.#append(event);
    } catch (error) {
      if (controller.signal.aborted) return;
      this.#fail(error);
      return;
    }
    this.list.removeAttribute("aria-busy");
    this.empty.hidden = this.list.children.length > 0;
    this.#follow(instance.id, controller);
  }

  close() {
    this.#stop();
    if (!this.dialog.open) return;
    this.dialog.close();
    if (this.opener?.isConnected) this.opener.focus();
    this.opener = null;
  }

  #stop() {
    this.controller?.abort();
    this.controller = null;
  }

  async #follow(id, controller) {
    const { signal } = controller;
    let delay = 1000;
    let failures = 0;
    while (!signal.aborted) {
      const parser = new SSEParser((message) => {
        if (signal.aborted) return; // a chunk read just before the panel moved on
        failures = 0; // a stream that delivers is healthy: the next drop retries soon
        this.#message(message);
      });
      try {
        const response = await this.api().eventStream(id, { lastEventId: this.lastId, signal });
        this.#setState("live", "Live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(value);
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && error.isAuthFailure) {
          this.onAuthFailure(error);
          return;
        }
        if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
          this.#fail(error);
          return;
        }
      }
      if (signal.aborted) return;
      // The stream ended or broke: the server restarts, or a proxy cut it. Resume.
      failures += 1;
      if (parser.retryMs !== null) delay = parser.retryMs;
      this.#setState("lost", "Reconnecting…");
      const wait = Math.min(delay * 2 ** Math.min(failures - 1, 5), MAX_RETRY_MS);
      await new Promise((resolve) => {
        const timer = window.setTimeout(resolve, wait);
        signal.addEventListener("abort", () => {
          window.clearTimeout(timer);
          resolve();
        }, { once: true });
      });
    }
  }

  #message(message) {
    if (message.event !== "message") return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return; // not an event: nothing to show
    }
    this.#append(event);
    this.empty.hidden = true;
  }

  #append(event) {
    const id = Number(event?.id);
    if (!Number.isFinite(id) || id <= this.lastId) return; // already shown
    this.lastId = id;
    const item = document.createElement("li");
    item.className = "timeline-event";
    item.dataset.id = String(id);
    item.dataset.kind = String(event.kind ?? "");

    const when = document.createElement("time");
    const date = new Date(Number(event.at));
    if (!Number.isNaN(date.getTime())) {
      when.dateTime = date.toISOString();
      when.textContent = TIME.format(date);
    }
    const kind = document.createElement("span");
    kind.className = "timeline-kind";
    kind.textContent = kindLabel(event.kind);
    const message = document.createElement("span");
    message.className = "timeline-message";
    message.textContent = String(event.message ?? "");
    const actor = document.createElement("span");
    actor.className = "timeline-actor muted";
    actor.textContent = String(event.actor ?? "");
    item.append(when, kind, message, actor);
    this.list.append(item);
    item.scrollIntoView({ block: "nearest" });
  }

  #setState(state, text) {
    this.live.dataset.state = state;
    if (this.state.textContent !== text) this.state.textContent = text;
  }

  #fail(error) {
    this.list.removeAttribute("aria-busy");
    this.#setState("lost", "Not live");
    this.error.replaceChildren();
    if (error.code) {
      const code = document.createElement("strong");
      code.className = "error-code";
      code.textContent = error.code;
      this.error.append(code, " ");
    }
    this.error.append(String(error.message ?? "The events cannot be read."));
    this.error.hidden = false;
  }
}
