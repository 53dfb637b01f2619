// The signed-in session in this browser: tokens in localStorage (shared by its tabs),
// the device id in sessionStorage (each tab is a device of its own: two tabs with one
// device id would keep replacing each other's socket, close code 4011).

import { AuthError, MemorydError, tokenClaims } from "/memoryd-client.js";

const KEY = "memoryd.session";
const DEVICE = "memoryd.deviceId";

export function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY));
    return s?.accessToken && s?.refreshToken ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  localStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession() {
  localStorage.removeItem(KEY);
}

export function deviceId() {
  return sessionStorage.getItem(DEVICE);
}

export function saveDeviceId(id) {
  if (id) sessionStorage.setItem(DEVICE, id);
}

function fresh(token) {
  const exp = tokenClaims(token)?.exp;
  return exp && exp * 1000 - Date.now() > 5_000;
}

/**
 * Refresh the tokens for the SDK. The server rotates the refresh token on each use and
 * revokes the whole family when one is used twice, so the tabs of this browser take
 * turns (a Web Lock), and a tab whose token another tab already rotated takes the
 * stored result instead of refreshing again.
 */
export function sharedRefresh({ refreshToken }) {
  const run = async () => {
    const stored = loadSession();
    if (stored && stored.refreshToken !== refreshToken && fresh(stored.accessToken)) return stored;
    const response = await fetch("/api/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refreshToken: stored?.refreshToken ?? refreshToken }),
    });
    const body = await response.json().catch(() => null);
    if (response.status === 401) throw new AuthError(body?.error?.code ?? "unauthorized", body?.error?.message ?? "session ended");
    if (!response.ok) throw new MemorydError(body?.error?.code ?? "http_error", body?.error?.message ?? `HTTP ${response.status}`, { status: response.status });
    const session = { ...stored, accessToken: body.accessToken, refreshToken: body.refreshToken, user: body.user };
    saveSession(session);
    return session;
  };
  return navigator.locks ? navigator.locks.request("memoryd-refresh", run) : run();
}
