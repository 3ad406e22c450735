// What each status of the contract (§4.1) looks like and which buttons it offers.
//
// The action table mirrors the contract's caller-driven transitions (§4.3): a
// button is shown only where the API would accept the request, so the common
// path never meets a state error. The API stays the judge; its answer is shown
// if the status moved on between a poll and a click.

const STATUSES = {
  CREATE_QUEUING: { label: "Queued", tone: "queued" },
  CREATING: { label: "Creating", tone: "busy" },
  CREATE_FAILED: { label: "Create failed", tone: "failed" },
  START_QUEUING: { label: "Queued", tone: "queued" },
  READY_TO_START: { label: "Ready to start", tone: "busy" },
  STARTING: { label: "Starting", tone: "busy" },
  RESTARTING: { label: "Restarting", tone: "busy" },
  START_FAILED: { label: "Start failed", tone: "failed" },
  RUNNING: { label: "Running", tone: "running" },
  STOPPING: { label: "Stopping", tone: "busy" },
  STOPPED: { label: "Stopped", tone: "stopped" },
  UNAVAILABLE: { label: "Unavailable", tone: "failed" },
  DELETED: { label: "Deleted", tone: "stopped" },
  RESIZING: { label: "Resizing", tone: "busy" },
  RESIZE_FAILED: { label: "Resize failed", tone: "failed" },
};

const ACTIONS = {
  start: new Set(["READY_TO_START", "START_FAILED", "STOPPED", "RESIZE_FAILED"]),
  stop: new Set(["RUNNING", "UNAVAILABLE"]),
  restart: new Set(["RUNNING"]),
  dequeue: new Set(["CREATE_QUEUING", "START_QUEUING", "READY_TO_START"]),
  delete: new Set([
    "CREATE_QUEUING", "CREATE_FAILED", "START_QUEUING", "READY_TO_START",
    "START_FAILED", "STOPPED", "UNAVAILABLE", "RESIZE_FAILED",
  ]),
};

export function statusLabel(status) {
  return STATUSES[status]?.label ?? status;
}

export function statusTone(status) {
  return STATUSES[status]?.tone ?? "stopped";
}

export function allows(status, action) {
  return ACTIONS[action]?.has(status) ?? false;
}

// Asked before acting; start is left out on purpose: it loses nothing and is
// undone by a stop, so a dialog would only slow the user down.
export const CONFIRMATIONS = {
  start: {
    title: (name) => `Start ${name}?`,
    text: "A notebook server starts on the instance's volume; its flavor's resources "
      + "are held, and auto-stop (if on) counts down, until it is stopped.",
    button: "Start",
    danger: false,
  },
  stop: {
    title: (name) => `Stop ${name}?`,
    text: "The notebook server shuts down and unsaved work in open notebooks is lost. "
      + "Files under /home/ma-user/work are kept for the next start.",
    button: "Stop",
    danger: false,
  },
  restart: {
    title: (name) => `Restart ${name}?`,
    text: "Running kernels are stopped and the server starts again. "
      + "The auto-stop countdown starts over.",
    button: "Restart",
    danger: false,
  },
  dequeue: {
    title: (name) => `Take ${name} out of the queue?`,
    text: "The instance gives up its place in the queue and becomes stopped.",
    button: "Leave queue",
    danger: false,
  },
  delete: {
    title: (name) => `Delete ${name}?`,
    text: "The instance and its EVS volume are destroyed, with every file on it. "
      + "This cannot be undone.",
    button: "Delete",
    danger: true,
  },
};
