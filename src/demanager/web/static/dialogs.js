// The three modal dialogs: confirm an action, create an instance, edit auto-stop.
//
// Native <dialog> with showModal() traps focus, closes on Escape and hands focus
// back to the opener, so none of that is reimplemented here. Errors from the
// API are shown in the dialog as the contract wrote them: error_code, then
// error_message.

import { flavorOptionLabel, flavorSummary, hours } from "./format.js";

const HOUR = 3600;

// Which field an error code is about, so the field can be marked and focused.
const FIELD_OF_CODE = {
  "ModelArts.6301": "name",
  "ModelArts.6331": "volume",
  "ModelArts.6348": "hours",
  "ModelArts.6349": "hours",
  "ModelArts.6323": "flavor",
  "ModelArts.6328": "flavor",
  "ModelArts.6329": "flavor",
  "ModelArts.6330": "flavor",
  "ModelArts.0118": "flavor",
};

export function showError(box, error) {
  box.replaceChildren();
  if (error.code) {
    const code = document.createElement("strong");
    code.className = "error-code";
    code.textContent = error.code;
    box.append(code, " ");
  }
  box.append(error.message);
  box.hidden = false;
}

function hideError(box) {
  box.hidden = true;
  box.replaceChildren();
}

function wireClose(dialog) {
  for (const button of dialog.querySelectorAll("[data-close]")) {
    button.addEventListener("click", () => dialog.close());
  }
}

export function confirmAction(dialog, { title, text, button, danger }) {
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  const ok = dialog.querySelector("#confirm-ok");
  ok.textContent = button;
  ok.className = `button ${danger ? "danger-solid" : "primary"}`;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

export class CreateDialog {
  constructor(dialog, { api, onCreated }) {
    this.dialog = dialog;
    this.api = api; // a function: the session's Api changes on sign-in
    this.onCreated = onCreated;
    this.form = dialog.querySelector("form");
    this.error = dialog.querySelector("#create-error");
    this.submit = dialog.querySelector("#create-submit");
    const field = (name) => this.form.elements.namedItem(name);
    this.fields = {
      name: field("name"),
      description: field("description"),
      profile: field("profile"),
      flavor: field("flavor"),
      volume: field("volume"),
      autoStop: field("auto_stop"),
      hours: field("hours"),
    };
    this.profileHint = dialog.querySelector("#create-profile-hint");
    this.flavorHint = dialog.querySelector("#create-flavor-hint");
    this.profiles = [];
    this.flavors = [];

    wireClose(dialog);
    this.fields.profile.addEventListener("change", () => this.#fillFlavors());
    this.fields.flavor.addEventListener("change", () => this.#describeFlavor());
    this.fields.autoStop.addEventListener("change", () => {
      this.fields.hours.disabled = !this.fields.autoStop.checked;
    });
    for (const input of Object.values(this.fields)) {
      input.addEventListener("input", () => input.removeAttribute("aria-invalid"));
    }
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#create();
    });
  }

  async open() {
    this.form.reset();
    this.fields.hours.disabled = false;
    hideError(this.error);
    for (const input of Object.values(this.fields)) input.removeAttribute("aria-invalid");
    this.#loading(true);
    this.dialog.showModal();
    this.fields.name.focus();
    try {
      // Fetched on every open: sold-out states and permissions change over time.
      [this.profiles, this.flavors] = await Promise.all([this.api().profiles(), this.api().flavors()]);
    } catch (error) {
      showError(this.error, error);
      return;
    } finally {
      this.#loading(false);
    }
    this.#fillProfiles();
  }

  #loading(busy) {
    this.submit.disabled = busy;
    if (busy) {
      const placeholder = new Option("Loading…", "");
      this.fields.profile.replaceChildren(placeholder);
      this.fields.flavor.replaceChildren(placeholder.cloneNode(true));
    }
  }

  #usable(flavor) {
    // The console creates EVS-backed instances, so a flavor must support EVS (else 6324).
    const storage = flavor.storage_list ?? ["evs"];
    return flavor.is_permitted !== false && storage.includes("evs");
  }

  #fitting(profile) {
    // profile.flavor_type is "Ascend" where the flavor's type is "ASCEND" (contract §3.6).
    const wanted = String(profile?.flavor_type ?? "").toLowerCase();
    return this.flavors.filter(
      (flavor) => this.#usable(flavor) && String(flavor.type ?? "").toLowerCase() === wanted,
    );
  }

  #fillProfiles() {
    // A profile that no usable flavor fits could never be created: leave it out.
    const offered = this.profiles.filter((profile) => this.#fitting(profile).length > 0);
    this.fields.profile.replaceChildren(
      ...offered.map((profile) => new Option(`${profile.name} · ${profile.flavor_type}`, profile.id)),
    );
    if (offered.length === 0) {
      showError(this.error, { message: "The catalog offers no environment you can use." });
      this.submit.disabled = true;
      return;
    }
    this.#fillFlavors();
  }

  #fillFlavors() {
    const profile = this.profiles.find((p) => p.id === this.fields.profile.value);
    this.profileHint.textContent = profile?.description ?? "";
    const previous = this.fields.flavor.value;
    const options = this.#fitting(profile).map((flavor) => {
      const option = new Option(flavorOptionLabel(flavor), flavor.name);
      // Sold out and not free: the API would refuse it (ModelArts.6329). Free ones queue.
      option.disabled = flavor.status === "soldOut" && flavor.promo_type !== "Free";
      return option;
    });
    this.fields.flavor.replaceChildren(...options);
    const keep = options.find((option) => option.value === previous && !option.disabled);
    const first = options.find((option) => !option.disabled);
    this.fields.flavor.value = (keep ?? first)?.value ?? "";
    this.submit.disabled = !first;
    this.#describeFlavor();
  }

  #describeFlavor() {
    const flavor = this.flavors.find((f) => f.name === this.fields.flavor.value);
    if (!flavor) {
      this.flavorHint.textContent = "No flavor of this environment's type is available now.";
      return;
    }
    const notes = [flavorSummary(flavor)];
    if (flavor.promo_type === "Free") {
      notes.push(flavor.duration ? `free; stops after ${hours(flavor.duration)}` : "free");
      if (flavor.status === "soldOut") notes.push("full now, so the instance will queue");
    }
    this.flavorHint.textContent = notes.filter(Boolean).join(" · ");
  }

  #body() {
    const { fields } = this;
    const spec = {
      storage: { type: "evs", location: { volume_size: fields.volume.valueAsNumber } },
      auto_stop: fields.autoStop.checked
        ? { enable: true, duration: fields.hours.valueAsNumber * HOUR }
        : { enable: false },
    };
    const body = {
      name: fields.name.value.trim(),
      profile_id: fields.profile.value,
      flavor: fields.flavor.value,
      spec,
    };
    if (fields.description.value !== "") body.description = fields.description.value;
    return body;
  }

  async #create() {
    hideError(this.error);
    this.submit.disabled = true;
    const label = this.submit.textContent;
    this.submit.textContent = "Creating…";
    try {
      const instance = await this.api().createInstance(this.#body());
      this.dialog.close();
      this.onCreated(instance);
    } catch (error) {
      showError(this.error, error);
      const field = this.fields[FIELD_OF_CODE[error.code]];
      if (field) {
        field.setAttribute("aria-invalid", "true");
        field.focus();
      }
    } finally {
      this.submit.disabled = false;
      this.submit.textContent = label;
    }
  }
}

export class AutoStopDialog {
  constructor(dialog, { api, onSaved }) {
    this.dialog = dialog;
    this.api = api;
    this.onSaved = onSaved;
    this.form = dialog.querySelector("form");
    this.title = dialog.querySelector("#auto-stop-title");
    this.enable = dialog.querySelector("#auto-stop-enable");
    this.hours = dialog.querySelector("#auto-stop-hours");
    this.error = dialog.querySelector("#auto-stop-error");
    this.instance = null;
    wireClose(dialog);
    this.enable.addEventListener("change", () => {
      this.hours.disabled = !this.enable.checked;
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save();
    });
  }

  open(instance) {
    this.instance = instance;
    const autoStop = instance.spec?.auto_stop ?? {};
    this.title.textContent = `Auto-stop of ${instance.name}`;
    this.enable.checked = Boolean(autoStop.enable);
    const stored = Number.isFinite(autoStop.duration) ? Math.round(autoStop.duration / HOUR) : 1;
    this.hours.value = String(Math.min(24, Math.max(1, stored)));
    this.hours.disabled = !this.enable.checked;
    hideError(this.error);
    this.dialog.showModal();
    this.enable.focus();
  }

  async #save() {
    hideError(this.error);
    const autoStop = this.enable.checked
      ? { enable: true, duration: this.hours.valueAsNumber * HOUR }
      : { enable: false };
    try {
      const updated = await this.api().updateInstance(this.instance.id, { spec: { auto_stop: autoStop } });
      this.dialog.close();
      this.onSaved(updated);
    } catch (error) {
      showError(this.error, error);
    }
  }
}
