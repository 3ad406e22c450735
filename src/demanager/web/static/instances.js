// The instance table, kept in step with the list API without re-rendering.
//
// Each poll updates rows in place, keyed by instance id, and touches only what
// changed: a keyboard user's focus stays on the button it was on, and screen
// readers are not told about text that did not change.

import { approximate, countdown, flavorSummary, hours, storageSummary, timestamp } from "./format.js";
import { allows, statusLabel, statusTone } from "./statuses.js";

const ACTION_LABELS = {
  start: "Start",
  stop: "Stop",
  restart: "Restart",
  dequeue: "Leave queue",
  delete: "Delete",
};

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function setAttr(element, name, value) {
  if (element.getAttribute(name) !== value) element.setAttribute(name, value);
}

function setHidden(element, hidden) {
  if (element.hidden !== hidden) element.hidden = hidden;
}

export class InstanceTable {
  constructor({ tbody, template, empty, onAction, onEditAutoStop, onOpen, onTimeline }) {
    this.tbody = tbody;
    this.template = template;
    this.empty = empty;
    this.onAction = onAction;
    this.onEditAutoStop = onEditAutoStop;
    this.onOpen = onOpen;
    this.onTimeline = onTimeline;
    this.entries = new Map(); // id -> { row, parts, instance, deadline, stopTimestamp }
  }

  render(instances) {
    const seen = new Set();
    instances.forEach((instance, index) => {
      seen.add(instance.id);
      const entry = this.entries.get(instance.id) ?? this.#create(instance.id);
      this.#update(entry, instance);
      // Move a row only when it is out of place: moving a node blurs the element
      // focused inside it.
      const here = this.tbody.children[index] ?? null;
      if (here !== entry.row) this.tbody.insertBefore(entry.row, here);
    });
    for (const [id, entry] of this.entries) {
      if (!seen.has(id)) {
        entry.row.remove();
        this.entries.delete(id);
      }
    }
    setHidden(this.empty, instances.length > 0);
    this.tick();
  }

  clear() {
    this.render([]);
  }

  focusRow(id) {
    const entry = this.entries.get(id);
    if (entry) entry.parts.name.closest("th").focus();
    return Boolean(entry);
  }

  // Called every second: only the countdowns move between polls.
  tick() {
    const now = Date.now();
    for (const entry of this.entries.values()) {
      setText(entry.parts.autoStop, this.#autoStopText(entry, now));
    }
  }

  #create(id) {
    const row = this.template.content.firstElementChild.cloneNode(true);
    row.dataset.id = id;
    const q = (selector) => row.querySelector(selector);
    const entry = {
      row,
      instance: null,
      deadline: null,
      stopTimestamp: null,
      parts: {
        name: q(".name"),
        description: q(".description"),
        badge: q(".badge"),
        badgeText: q(".badge-text"),
        detail: q(".status-detail"),
        profile: q(".profile"),
        flavor: q(".flavor"),
        storage: q(".cell-storage"),
        autoStop: q(".auto-stop-text"),
        editAutoStop: q("[data-edit='auto-stop']"),
        timeline: q("[data-timeline]"),
        created: q(".cell-created time"),
        open: q("[data-open]"),
        actions: [...row.querySelectorAll("[data-action]")],
      },
    };
    // Handlers read entry.instance at click time, so they always act on the latest view.
    for (const button of entry.parts.actions) {
      button.addEventListener("click", () => this.onAction(entry.instance, button.dataset.action));
    }
    entry.parts.editAutoStop.addEventListener("click", () => this.onEditAutoStop(entry.instance));
    entry.parts.timeline.addEventListener("click", () => this.onTimeline(entry.instance));
    entry.parts.open.addEventListener("click", (event) => {
      // The href (the proxy's address) stays for "copy link"; a click opens a signed link.
      event.preventDefault();
      this.onOpen(entry.instance);
    });
    this.entries.set(id, entry);
    return entry;
  }

  #update(entry, instance) {
    entry.instance = instance;
    const { parts, row } = entry;
    const { name, status } = instance;
    row.dataset.status = status;

    setText(parts.name, name);
    setText(parts.description, instance.description ?? "");
    setHidden(parts.description, !instance.description);

    parts.badge.dataset.tone = statusTone(status);
    setText(parts.badgeText, statusLabel(status));
    setAttr(parts.badge, "title", status);
    setText(parts.detail, this.#statusDetail(instance));

    setText(parts.profile, instance.profile?.name ?? instance.profile?.id ?? "");
    const summary = instance.flavor_details ? flavorSummary(instance.flavor_details) : "";
    setText(parts.flavor, summary ? `${instance.flavor} · ${summary}` : instance.flavor);
    setText(parts.storage, storageSummary(instance.spec?.storage));

    const created = timestamp(instance.creation_timestamp);
    setText(parts.created, created.text);
    setAttr(parts.created, "datetime", created.iso);

    this.#anchorCountdown(entry, instance);
    setAttr(parts.editAutoStop, "aria-label", `Edit auto-stop of ${name}`);
    setAttr(parts.timeline, "aria-label", `Timeline of ${name}`);

    const url = instance.spec?.annotations?.url ?? "";
    const canOpen = status === "RUNNING" && url !== "";
    setHidden(parts.open, !canOpen);
    if (canOpen) setAttr(parts.open, "href", url);
    else parts.open.removeAttribute("href");
    setAttr(parts.open, "aria-label", `Open JupyterLab of ${name} (opens a new tab)`);

    for (const button of parts.actions) {
      const action = button.dataset.action;
      setHidden(button, !allows(status, action));
      setAttr(button, "aria-label", `${ACTION_LABELS[action]} ${name}`);
    }
  }

  #statusDetail(instance) {
    const queue = instance.queuing_info;
    if (queue) {
      const wait = queue.remain_time > 0 ? ` · ${approximate(queue.remain_time)}` : "";
      return `#${queue.rank} in queue${wait}`;
    }
    const failure = instance.spec?.failed_reasons;
    if (failure || instance.error_code) {
      const code = failure?.code ?? instance.error_code;
      return failure?.message ? `${code}: ${failure.message}` : code;
    }
    return "";
  }

  // The countdown runs on the browser's clock from the server's remain_time, so a
  // skew between the two clocks does not show. It is re-anchored only when the
  // server re-armed it or the two disagree by more than a rounding error, so the
  // figure never jumps back and forth between polls.
  #anchorCountdown(entry, instance) {
    const autoStop = instance.spec?.auto_stop ?? {};
    const armed = instance.status === "RUNNING"
      && (Number.isFinite(autoStop.remain_time) || Number.isFinite(autoStop.stop_timestamp));
    if (!armed) {
      entry.deadline = null;
      entry.stopTimestamp = null;
      return;
    }
    const fresh = Number.isFinite(autoStop.remain_time)
      ? Date.now() + autoStop.remain_time * 1000
      : autoStop.stop_timestamp;
    if (entry.deadline === null || entry.stopTimestamp !== autoStop.stop_timestamp
        || Math.abs(fresh - entry.deadline) > 1500) {
      entry.deadline = fresh;
      entry.stopTimestamp = autoStop.stop_timestamp;
    }
  }

  #autoStopText(entry, now) {
    const autoStop = entry.instance.spec?.auto_stop ?? {};
    if (entry.deadline !== null) {
      const left = (entry.deadline - now) / 1000;
      return left >= 1 ? `${countdown(left)} left` : "stopping…";
    }
    if (!autoStop.enable) return "Off";
    const after = Number.isFinite(autoStop.duration) ? `after ${hours(autoStop.duration)}` : "On";
    // Turned on while running: the contract arms it at the next start.
    return entry.instance.status === "RUNNING" ? `${after} (from next start)` : after;
  }
}
