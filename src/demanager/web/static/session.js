// Where the signed-in token lives: sessionStorage (gone with the tab) unless the
// user asks to be remembered, then localStorage. Signing out clears both.

const KEY = "demanager.console.session";

function stores() {
  // Storage access throws in some privacy modes; the console then works for one page load.
  const found = [];
  for (const name of ["sessionStorage", "localStorage"]) {
    try {
      found.push(window[name]);
    } catch {
      /* unavailable */
    }
  }
  return found;
}

export function loadSession() {
  for (const store of stores()) {
    try {
      const saved = JSON.parse(store.getItem(KEY) ?? "null");
      if (typeof saved?.token === "string" && typeof saved?.project === "string") {
        return saved;
      }
    } catch {
      /* a corrupt entry is the same as none */
    }
  }
  return null;
}

export function saveSession({ token, project }, remember) {
  clearSession();
  try {
    const store = remember ? window.localStorage : window.sessionStorage;
    store.setItem(KEY, JSON.stringify({ token, project }));
  } catch {
    /* not persisted: the user signs in again after a reload */
  }
}

export function clearSession() {
  for (const store of stores()) {
    try {
      store.removeItem(KEY);
    } catch {
      /* nothing to clear */
    }
  }
}
