// The console's entry point: sign-in, the polling loop, and the wiring between
// the table, the dialogs and the API.
//
// The list is polled every two seconds (ten while the tab is hidden); a poll
// never overlaps another, and every action triggers one at once so the table
// follows the user's own clicks without waiting.

import { Api, ApiError } from "./api.js";
import { AutoStopDialog, confirmAction, CreateDialog, showError } from "./dialogs.js";
import { InstanceTable } from "./instances.js";
import { clearSession, loadSession, saveSession } from "./session.js";
import { CONFIRMATIONS, statusLabel } from "./statuses.js";
import { Timeline } from "./timeline.js";

const POLL_MS = 2000;
const HIDDEN_POLL_MS = 10000;
const TOAST_MS = 6000;
// Served at <root>/console: the API lives under the same root.
const ROOT = window.location.pathname.replace(/\/console(\/.*)?$/, "");

const $ = (id) => document.getElementById(id);

class Console {
  constructor() {
    this.api = null;
    this.timer = null;
    this.inflight = null; // the poll in flight
    this.queued = null; // the poll that follows it
    this.known = new Map(); // id -> last status seen, to announce changes
    this.deleting = new Map(); // id -> name, to announce the row's disappearance

    this.table = new InstanceTable({
      tbody: $("instance-rows"),
      template: $("row-template"),
      empty: $("empty-state"),
      onAction: (instance, action) => this.act(instance, action),
      onEditAutoStop: (instance) => this.autoStopDialog.open(instance),
      onOpen: (instance) => this.openNotebook(instance),
      onTimeline: (instance) => this.timeline.open(instance),
    });
    this.timeline = new Timeline($("timeline-dialog"), {
      api: () => this.api,
      onAuthFailure: (error) => this.signOut(error),
    });
    this.createDialog = new CreateDialog($("create-dialog"), {
      api: () => this.api,
      onCreated: (instance) => {
        this.known.set(instance.id, instance.status);
        this.announce(`${instance.name}: ${statusLabel(instance.status)}`);
        this.refresh();
      },
    });
    this.autoStopDialog = new AutoStopDialog($("auto-stop-dialog"), {
      api: () => this.api,
      onSaved: (instance) => {
        this.announce(`Auto-stop of ${instance.name} saved`);
        this.refresh();
      },
    });

    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn();
    });
    $("sign-out").addEventListener("click", () => this.signOut());
    $("new-instance").addEventListener("click", () => this.createDialog.open());
    $("only-mine").addEventListener("change", () => this.refresh());
    document.addEventListener("visibilitychange", () => {
      if (this.api && !document.hidden) this.refresh().finally(() => this.schedule());
    });
    window.setInterval(() => this.table.tick(), 1000);
  }

  start() {
    const saved = loadSession();
    if (saved) this.enter(saved);
    else this.showSignIn();
  }

  // --- session ------------------------------------------------------------------

  showSignIn(error) {
    $("instances-view").hidden = true;
    $("session-bar").hidden = true;
    $("sign-in-view").hidden = false;
    document.title = "Sign in · demanager console";
    const box = $("sign-in-error");
    if (error) showError(box, error);
    else box.hidden = true;
    $(error || !$("sign-in-token").value ? "sign-in-token" : "sign-in-project").focus();
  }

  async signIn() {
    const token = $("sign-in-token").value.trim();
    const project = $("sign-in-project").value.trim();
    if (!token || !project) {
      showError($("sign-in-error"), { message: "Enter both a token and a project ID." });
      $(token ? "sign-in-project" : "sign-in-token").focus();
      return;
    }
    const api = new Api({ token, project, root: ROOT });
    const submit = $("sign-in-form").querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      // The list is the cheapest call that proves both the token and the project.
      await api.listInstances({ onlyMine: true });
    } catch (error) {
      submit.disabled = false;
      showError($("sign-in-error"), error);
      // 403 is the project not matching the token (ModelArts.0210); the rest is the token.
      $(error.status === 403 ? "sign-in-project" : "sign-in-token").focus();
      return;
    }
    submit.disabled = false;
    saveSession({ token, project }, $("sign-in-remember").checked);
    $("sign-in-form").reset();
    this.enter({ token, project });
  }

  enter({ token, project }) {
    this.api = new Api({ token, project, root: ROOT });
    this.known.clear();
    $("session-project").textContent = project;
    $("sign-in-view").hidden = true;
    $("session-bar").hidden = false;
    $("instances-view").hidden = false;
    document.title = "Instances · demanager console";
    $("instances-title").setAttribute("tabindex", "-1");
    $("instances-title").focus();
    this.refresh().finally(() => this.schedule());
  }

  // The tab opens during the click (popup blockers allow that), then goes to a signed
  // link, so the notebook opens without asking to sign in again. Should the link fail,
  // the proxy's own address still leads there through its sign-in page.
  async openNotebook(instance) {
    const tab = window.open("about:blank", "_blank");
    if (!tab) return;
    tab.opener = null;
    const fallback = instance.spec?.annotations?.url ?? "";
    try {
      const { url } = await this.api.signedUrl(instance.id);
      tab.location.replace(url);
    } catch {
      if (fallback) tab.location.replace(fallback);
      else tab.close();
    }
  }

  signOut(error) {
    clearSession();
    this.api = null;
    this.timeline.close();
    window.clearTimeout(this.timer);
    this.table.clear();
    this.known.clear();
    this.deleting.clear();
    $("list-error").hidden = true;
    this.showSignIn(error);
  }

  // --- polling ------------------------------------------------------------------

  schedule() {
    window.clearTimeout(this.timer);
    if (!this.api) return;
    const delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    // finally: a failing render must not end the loop.
    this.timer = window.setTimeout(() => this.refresh().finally(() => this.schedule()), delay);
  }

  // Resolves once the table shows data fetched after the call: a caller that
  // arrives while a poll is in flight gets the next poll, shared with any other
  // caller that arrived meanwhile.
  refresh() {
    if (this.inflight) {
      const next = () => {
        this.queued = null;
        return this.refresh();
      };
      this.queued ??= this.inflight.then(next, next);
      return this.queued;
    }
    this.inflight = this.#poll().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  async #poll() {
    const api = this.api;
    if (!api) return;
    let page;
    try {
      page = await api.listInstances({ onlyMine: $("only-mine").checked });
    } catch (error) {
      if (api !== this.api) return; // signed out meanwhile
      if (error instanceof ApiError && error.isAuthFailure) this.signOut(error);
      else this.#live(false);
      return;
    }
    if (api !== this.api) return;
    this.#live(true);
    this.#apply(page.instances);
  }

  #apply(instances) {
    const messages = [];
    for (const instance of instances) {
      const before = this.known.get(instance.id);
      if (before && before !== instance.status) {
        messages.push(`${instance.name}: ${statusLabel(instance.status)}`);
      }
    }
    const present = new Set(instances.map((instance) => instance.id));
    for (const [id, name] of this.deleting) {
      if (!present.has(id)) {
        messages.push(`${name} deleted`);
        this.deleting.delete(id);
      }
    }
    this.known = new Map(instances.map((instance) => [instance.id, instance.status]));
    this.table.render(instances);
    if (messages.length) this.announce(messages.join(". "));
  }

  #live(ok) {
    const indicator = $("live-indicator");
    indicator.dataset.state = ok ? "ok" : "lost";
    const text = ok ? "Live · refreshes every 2 s" : "Connection lost · retrying";
    if ($("live-text").textContent !== text) $("live-text").textContent = text;
  }

  // --- actions ------------------------------------------------------------------

  async act(instance, action) {
    const confirmation = CONFIRMATIONS[action];
    if (confirmation) {
      const confirmed = await confirmAction($("confirm-dialog"), {
        ...confirmation,
        title: confirmation.title(instance.name),
      });
      if (!confirmed) return;
    }
    if (!this.api) return; // a poll signed us out while the dialog was open
    $("list-error").hidden = true;
    try {
      if (action === "delete") {
        await this.api.deleteInstance(instance.id);
        this.deleting.set(instance.id, instance.name);
        this.announce(`Deleting ${instance.name}`);
      } else {
        const answer = await this.api.act(instance.id, action);
        this.known.set(instance.id, answer.current_status);
        this.announce(`${instance.name}: ${statusLabel(answer.current_status)}`);
      }
    } catch (error) {
      if (error instanceof ApiError && error.isAuthFailure) {
        this.signOut(error);
        return;
      }
      const box = $("list-error");
      showError(box, error);
      box.prepend(`Could not ${ACTION_VERBS[action]} ${instance.name}: `);
    }
    await this.refresh();
    // The clicked button may be gone with the old status; keep focus on the row
    // (or on the heading once the row left) rather than losing it to the page.
    if (!this.table.focusRow(instance.id)) $("instances-title").focus();
  }

  announce(message) {
    const toast = $("announcer");
    toast.textContent = message;
    toast.dataset.visible = "true";
    window.clearTimeout(this.toastTimer);
    this.toastTimer = window.setTimeout(() => {
      toast.dataset.visible = "false";
    }, TOAST_MS);
  }
}

const ACTION_VERBS = {
  start: "start",
  stop: "stop",
  restart: "restart",
  dequeue: "take out of the queue",
  delete: "delete",
};

new Console().start();
