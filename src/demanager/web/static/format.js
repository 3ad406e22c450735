// How numbers, sizes and times read in the console. Pure functions, no DOM.

export function countdown(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return `${h}:${pad(m)}:${pad(s % 60)}`;
}

export function hours(seconds) {
  const h = seconds / 3600;
  const shown = Number.isInteger(h) ? String(h) : h.toFixed(1);
  return `${shown} h`;
}

export function approximate(seconds) {
  if (seconds < 90) return "about a minute";
  if (seconds < 3600) return `about ${Math.round(seconds / 60)} min`;
  return `about ${hours(Math.round(seconds / 360) * 360)}`;
}

export function flavorSummary(flavor) {
  const params = flavor.params ?? {};
  const parts = [];
  if (params.CPU) parts.push(`${params.CPU} vCPU`);
  if (params.memory) parts.push(String(params.memory));
  if (params.GPU) parts.push(`${params.GPU} × ${params.gpu_type ?? "GPU"}`);
  return parts.join(" · ");
}

export function flavorOptionLabel(flavor) {
  const notes = [];
  if (flavor.promo_type === "Free") notes.push("free");
  if (flavor.status === "soldOut") notes.push(flavor.promo_type === "Free" ? "queues" : "sold out");
  const summary = flavorSummary(flavor);
  return [flavor.name, summary && `(${summary})`, notes.length ? `— ${notes.join(", ")}` : ""]
    .filter(Boolean).join(" ");
}

export function storageSummary(storage) {
  if (!storage) return "";
  const location = storage.location ?? {};
  if (storage.type === "evs") {
    return `EVS ${location.volume_size ?? 5} ${location.volume_unit ?? "GB"}`;
  }
  return `${storage.type.toUpperCase()} ${location.path ?? ""}`.trim();
}

const THIS_YEAR = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "numeric", minute: "2-digit",
});
const OTHER_YEAR = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function timestamp(ms) {
  const date = new Date(Number(ms));
  if (Number.isNaN(date.getTime())) return { text: "", iso: "" };
  // The year only when it is not this one: the column stays narrow.
  const format = date.getFullYear() === new Date().getFullYear() ? THIS_YEAR : OTHER_YEAR;
  return { text: format.format(date), iso: date.toISOString() };
}
