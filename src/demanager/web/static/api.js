// The REST API as the console uses it: the public routes, the caller's own token.
//
// Every failure becomes an ApiError carrying the contract's error_code and
// error_message, so the views can show them as the API wrote them.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0 when the server could not be reached at all
    this.code = code;
  }

  get isAuthFailure() {
    return this.status === 401 || this.status === 403;
  }
}

export class Api {
  constructor({ token, project, root = "" }) {
    this.token = token;
    this.project = project;
    this.base = `${root}/v1/${encodeURIComponent(project)}/demanager`;
  }

  async request(method, path, body) {
    const headers = { "X-Auth-Token": this.token, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        // The list changes under us; never answer a poll from the HTTP cache.
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "NETWORK", "The server cannot be reached.");
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // A proxy in between may answer with HTML; the status line still says enough.
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        payload?.error_code ?? `HTTP ${response.status}`,
        payload?.error_message ?? (response.statusText || "The request failed."),
      );
    }
    return payload;
  }

  listInstances({ onlyMine }) {
    const query = new URLSearchParams({
      de_type: "Notebook",
      sortby: "name",
      show_self: onlyMine ? "true" : "false",
    });
    return this.request("GET", `/instances?${query}`);
  }

  createInstance(body) {
    return this.request("POST", "/instances", body);
  }

  updateInstance(id, body) {
    return this.request("PUT", `/instances/${encodeURIComponent(id)}`, body);
  }

  deleteInstance(id) {
    return this.request("DELETE", `/instances/${encodeURIComponent(id)}`);
  }

  act(id, action) {
    return this.request("POST", `/instances/${encodeURIComponent(id)}/action`, { action });
  }

  // A short-lived link that opens the notebook without a second sign-in.
  signedUrl(id) {
    return this.request("POST", `/instances/${encodeURIComponent(id)}/signed-url`);
  }

  // Extension routes: an instance's event log (docs/events.md), oldest first.
  events(id, { limit, offset }) {
    const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    return this.request("GET", `/instances/${encodeURIComponent(id)}/events?${query}`);
  }

  // The live feed of an instance's events, as a streaming fetch() answer: EventSource
  // cannot send the X-Auth-Token header. The caller reads and parses the body
  // (timeline.js) and aborts it through `signal`.
  async eventStream(id, { lastEventId, signal }) {
    const headers = {
      "X-Auth-Token": this.token,
      Accept: "text/event-stream",
      "Last-Event-ID": String(lastEventId),
    };
    let response;
    try {
      response = await fetch(`${this.base}/instances/${encodeURIComponent(id)}/events/stream`, {
        headers,
        signal,
        cache: "no-store",
      });
    } catch (error) {
      if (error?.name === "AbortError") throw error;
      throw new ApiError(0, "NETWORK", "The server cannot be reached.");
    }
    if (!response.ok) {
      let payload = null;
      try {
        payload = await response.json();
      } catch {
        /* not JSON */
      }
      throw new ApiError(
        response.status,
        payload?.error_code ?? `HTTP ${response.status}`,
        payload?.error_message ?? (response.statusText || "The request failed."),
      );
    }
    return response;
  }

  // Extension routes: the catalog the create form offers.
  async profiles() {
    return (await this.request("GET", "/profiles")).profiles;
  }

  async flavors() {
    return (await this.request("GET", "/flavors")).flavors;
  }
}
