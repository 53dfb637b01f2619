// Errors in words: what the person can do about it, never a stack trace.

const FIELD_NAMES = { firstName: "First name", lastName: "Last name", email: "Email", password: "Password", title: "Title", content: "Message" };

export function describe(error) {
  if (!error) return "Something went wrong.";
  if (error instanceof TypeError && /fetch|network/i.test(error.message)) {
    return "Cannot reach the server. Check your connection and try again.";
  }
  const details = Array.isArray(error.details) ? error.details : [];
  switch (error.code) {
    case "invalid_credentials":
      return "That email and password do not match an account.";
    case "account_disabled":
      return "This account is disabled.";
    case "validation_failed":
    case "bad_request":
      if (details.length) {
        return details.map((d) => `${FIELD_NAMES[d.field] ?? d.field ?? "Input"}: ${d.message}`).join(". ") + ".";
      }
      return error.message || "Please check what you entered.";
    case "forbidden":
      if (error.details?.permission === "access:ai") {
        return "Memo is available on premium accounts: this account cannot ask Memo.";
      }
      return `Your account is not allowed to do that${error.details?.permission ? ` (it lacks ${error.details.permission})` : ""}.`;
    case "rate_limited":
      return `Too many requests. Try again in ${Math.max(1, Math.ceil(error.retryAfter ?? 1))} s.`;
    case "not_found":
      return "That memory or message no longer exists.";
    case "whatsapp_not_connected":
      return "This WhatsApp number is disconnected: connect it again to send.";
    case "disconnected":
      return "The connection dropped before the server answered. Try again.";
    case "timeout":
      return "The server did not answer in time. Try again.";
    case "token_reused":
    case "invalid_token":
    case "token_expired":
    case "unauthorized":
    case "no_refresh_token":
      return "Your session has ended. Please sign in again.";
    case "internal":
      return "The server hit an unexpected error. Try again in a moment.";
    default:
      return error.message || "Something went wrong.";
  }
}
