// Entry point: sign in or register, then the app. Any unexpected error is shown in
// words (the alert), never a blank page.

import { login, register } from "/memoryd-client.js";
import { App, showAlert } from "./app.js";
import { $ } from "./dom.js";
import { describe } from "./errors.js";
import { loadSession, saveSession } from "./session.js";

const NOTICE = "memoryd.notice"; // why the last session ended, shown on the sign-in form

window.addEventListener("error", (e) => showAlert(`Something went wrong: ${e.message}. Reload the page to continue.`));
window.addEventListener("unhandledrejection", (e) => showAlert(describe(e.reason)));

function showAuth(message = "") {
  $("booting").hidden = true;
  $("app").hidden = true;
  $("auth").hidden = false;
  $("login-error").textContent = message;
  $("login-email").focus();
}

function startApp(session) {
  $("booting").hidden = true;
  $("auth").hidden = true;
  const onSignedOut = (message) => {
    if (message) sessionStorage.setItem(NOTICE, message);
    location.reload(); // a clean page: no listener or state of the old session survives
  };
  const app = new App(session, { onSignedOut });
  window.memorydApp = app; // for the browser tests and the curious
  app.start();
}

function fields(form) {
  return Object.fromEntries(new FormData(form).entries());
}

async function submit(form, errorEl, call) {
  errorEl.textContent = "";
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const result = await call();
    saveSession({ accessToken: result.accessToken, refreshToken: result.refreshToken, user: result.user });
    startApp(loadSession());
  } catch (error) {
    errorEl.textContent = describe(error);
  } finally {
    button.disabled = false;
  }
}

function bindAuth() {
  $("alert-close").addEventListener("click", () => ($("alert").hidden = true));
  $("show-register").addEventListener("click", () => {
    $("login-form").hidden = true;
    $("register-form").hidden = false;
    $("register-first").focus();
  });
  $("show-login").addEventListener("click", () => {
    $("register-form").hidden = true;
    $("login-form").hidden = false;
    $("login-email").focus();
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const { email, password } = fields(e.target);
    if (!email || !password) return ($("login-error").textContent = "Enter your email and password.");
    submit(e.target, $("login-error"), () => login(email, password, { rememberMe: true }));
  });
  $("register-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = fields(e.target);
    if (!f.firstName || !f.lastName || !f.email || !f.password) {
      return ($("register-error").textContent = "Fill in every field.");
    }
    submit(e.target, $("register-error"), () => register(f));
  });
}

bindAuth();
const session = loadSession();
if (session) startApp(session);
else {
  showAuth(sessionStorage.getItem(NOTICE) ?? "");
  sessionStorage.removeItem(NOTICE);
}
