// The signed-in app: the memory list and one thread, kept live from the socket's events.
//
// State comes from requests (memory.list, category.list, message.history) and is then
// kept current by events, which the SDK hands over once each and in seq order, across
// reconnects. Applying an event is an upsert by id, so a state fetched after a resync
// and the events that follow it agree.

import { MemorydClient, tokenClaims } from "/memoryd-client.js";
import { attachmentsView, contentShownByFiles, enableAttachments, namesOf } from "./attachments.js";
import { $, h, time } from "./dom.js";
import { describe } from "./errors.js";
import { searchMemories } from "./search.js";
import { clearSession, deviceId, saveDeviceId, saveSession, sharedRefresh } from "./session.js";

const HISTORY_PAGE = 30;
const SEND_TIMEOUT = 10 * 60_000; // a send waits through an outage: it is resent on reconnect
const TYPING_EVERY = 2_000;
const TYPING_SHOWN = 4_000;

const CONNECTION_TEXT = {
  idle: "Connecting…",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline: messages will be sent when you are back",
  superseded: "Replaced by another connection of this device: reload to continue",
  signedout: "Signed out",
  closed: "Disconnected",
};

const WA_STATUS = {
  pending: "Sending to WhatsApp",
  sent: "Sent",
  delivered: "Delivered",
  read: "Read",
  failed: "Not delivered",
};

export function showAlert(text) {
  $("alert-text").textContent = text;
  $("alert").hidden = false;
}

export class App {
  constructor(session, { onSignedOut }) {
    this.session = session;
    this.onSignedOut = onSignedOut;
    this.permissions = new Set(tokenClaims(session.accessToken)?.permissions ?? []);
    this.categories = new Map();
    this.memories = new Map();
    this.activity = new Map(); // memoryId -> newest message time, for the list order
    this.filter = { favorites: false, categoryId: "" };
    this.query = "";
    this.searchResults = null; // ids, while a search is shown
    this.thread = null;
    this.typingTimer = null;
    this.lastTyping = 0;
    this.client = new MemorydClient({
      accessToken: session.accessToken,
      refreshToken: session.refreshToken,
      deviceId: deviceId(),
      refresh: sharedRefresh,
      clientName: "memoryd-web/1",
    });
    this.client.on("state", (state) => this.showConnection(state));
    this.client.on("welcome", (w) => saveDeviceId(w.deviceId));
    this.client.on("resync", () => this.loadAll());
    this.client.on("event", (e) => this.apply(e));
    this.client.on("signal", (s) => this.onSignal(s));
    this.client.on("tokens", (t) => {
      this.session = { ...this.session, ...t };
      this.permissions = new Set(tokenClaims(t.accessToken)?.permissions ?? []);
      saveSession(this.session);
    });
    this.client.on("signedout", () => this.signOut("Your session has ended. Please sign in again."));
    this.client.on("error", (error) => console.warn("memoryd:", error));
  }

  start() {
    $("app").hidden = false;
    const user = this.session.user;
    $("who").textContent = user ? `${user.firstName} ${user.lastName} · ${user.email}` : "";
    this.bindControls();
    this.client.connect().catch((error) => showAlert(describe(error)));
  }

  // -- controls ----------------------------------------------------------------------------

  bindControls() {
    $("logout").addEventListener("click", () => this.logout());
    $("filter-all").addEventListener("click", () => this.setFilter({ favorites: false }));
    $("filter-favorites").addEventListener("click", () => this.setFilter({ favorites: true }));
    $("category-filter").addEventListener("change", (e) => this.setFilter({ categoryId: e.target.value }));
    let searchTimer = null;
    $("search").addEventListener("input", (e) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => this.search(e.target.value.trim()), 300);
    });
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      clearTimeout(searchTimer);
      this.search($("search").value.trim());
    });
    $("new-memory").addEventListener("submit", (e) => this.createMemory(e));
    $("back").addEventListener("click", () => this.closeThread());
    $("favorite").addEventListener("click", () => this.toggleFavorite());
    $("older").addEventListener("click", () => this.loadOlder());
    $("composer").addEventListener("submit", (e) => this.onSubmit(e));
    const input = $("message-input");
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    input.addEventListener("input", () => this.onTyping());
    document.addEventListener("visibilitychange", () => this.markRead());
    window.addEventListener("focus", () => this.markRead());
    this.attachments = enableAttachments($("composer"), {
      client: this.client,
      memoryId: () => this.thread?.memoryId,
      changed: () => ($("composer-status").textContent = ""),
    });
  }

  showConnection(state) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = CONNECTION_TEXT[state] ?? state;
    if (this.thread) this.renderMessages(); // "waiting for connection" on unsent messages
  }

  async logout() {
    try {
      await this.client.api("/api/auth/logout", { method: "POST", body: { refreshToken: this.session.refreshToken } });
    } catch {
      // signing out locally is what matters; the refresh token expires by itself
    }
    this.signOut("");
  }

  signOut(message) {
    this.client.close();
    clearSession();
    this.onSignedOut(message);
  }

  // -- loading -----------------------------------------------------------------------------

  async loadAll() {
    try {
      const [{ categories }] = await Promise.all([this.client.request("category.list"), this.loadList()]);
      this.categories = new Map(categories.map((c) => [c.id, c]));
      this.renderCategories();
      this.renderList();
      if (this.thread) await this.openThread(this.thread.memoryId, { keepFocus: true });
    } catch (error) {
      showAlert(describe(error));
    }
  }

  async loadList() {
    $("list-status").textContent = "Loading…";
    const params = { limit: 100, sortBy: "updated_at" };
    if (this.filter.favorites) params.isFavorite = true;
    if (this.filter.categoryId) params.categoryId = this.filter.categoryId;
    try {
      const { memories, pagination } = await this.client.request("memory.list", params);
      this.memories = new Map(memories.map((m) => [m.id, m]));
      this.listTotal = pagination.total;
      $("list-status").textContent = "";
    } catch (error) {
      $("list-status").textContent = describe(error);
    }
    this.renderList();
  }

  async setFilter(change) {
    Object.assign(this.filter, change);
    $("filter-all").setAttribute("aria-pressed", String(!this.filter.favorites));
    $("filter-favorites").setAttribute("aria-pressed", String(this.filter.favorites));
    await this.loadList();
    if (this.query) await this.search(this.query);
  }

  async search(query) {
    this.query = query;
    if (!query) {
      this.searchResults = null;
      $("list-status").textContent = "";
      return this.renderList();
    }
    $("list-status").textContent = "Searching…";
    try {
      const found = await searchMemories(this.client, query, this.filter);
      if (this.query !== query) return; // a newer search is on its way
      for (const m of found) if (!this.memories.has(m.id)) this.memories.set(m.id, m);
      this.searchResults = found.map((m) => m.id);
      this.searchMatches = new Map(found.map((m) => [m.id, m.matches]));
      $("list-status").textContent = `${found.length} found for “${query}”`;
    } catch (error) {
      $("list-status").textContent = describe(error);
    }
    this.renderList();
  }

  async createMemory(e) {
    e.preventDefault();
    const input = $("new-title");
    const title = input.value.trim();
    if (!title) return;
    const params = { title };
    if (this.filter.categoryId) params.categoryId = this.filter.categoryId;
    if (this.filter.favorites) params.isFavorite = true;
    try {
      const memory = await this.client.request("memory.create", params);
      input.value = "";
      this.upsertMemory(memory);
      this.openThread(memory.id);
    } catch (error) {
      showAlert(describe(error));
    }
  }

  // -- events ------------------------------------------------------------------------------

  apply({ event, data }) {
    switch (event) {
      case "memory.created":
      case "memory.updated":
        this.upsertMemory(data);
        break;
      case "memory.deleted":
        this.memories.delete(data.id);
        if (this.thread?.memoryId === data.id) this.closeThread("This memory was deleted.");
        this.renderList();
        break;
      case "memory.read": {
        const memory = this.memories.get(data.memoryId);
        if (memory) memory.lastReadSeq = Math.max(memory.lastReadSeq, data.seq);
        this.renderList();
        break;
      }
      case "category.created":
      case "category.updated":
        this.categories.set(data.id, data);
        this.renderCategories();
        this.renderList();
        break;
      case "category.deleted":
        this.categories.delete(data.id);
        this.renderCategories();
        break;
      case "message.created":
      case "message.updated":
        this.onMessage(data, event === "message.created");
        break;
      case "message.deleted":
        if (this.thread?.memoryId === data.memoryId) {
          this.thread.messages.delete(data.id);
          this.renderMessages();
        }
        break;
      default:
        break; // be lenient: events this app does not know are ignored
    }
  }

  upsertMemory(memory) {
    const known = this.memories.get(memory.id);
    // Counters move with message events; an older copy must not move them back.
    if (known) {
      memory.lastMessageSeq = Math.max(memory.lastMessageSeq, known.lastMessageSeq);
      memory.lastReadSeq = Math.max(memory.lastReadSeq, known.lastReadSeq);
    }
    this.memories.set(memory.id, memory);
    this.renderList();
    if (this.thread?.memoryId === memory.id) this.renderThreadHeader();
  }

  onMessage(message, created) {
    const memory = this.memories.get(message.memoryId);
    if (memory && created && message.seq > memory.lastMessageSeq) {
      memory.lastMessageSeq = message.seq;
      memory.messageCount += 1;
      this.activity.set(memory.id, message.createdAt);
    }
    if (this.thread?.memoryId === message.memoryId) {
      this.storeMessage(message);
      this.renderMessages();
      this.markRead();
    }
    this.renderList();
  }

  storeMessage(message) {
    const t = this.thread;
    const known = t.messages.get(message.id);
    // A copy older than the one shown (a send's reply after a later delivery update).
    if (known && Date.parse(known.updatedAt) > Date.parse(message.updatedAt)) return;
    t.messages.set(message.id, message);
    if (message.clientMsgId) t.pending.delete(message.clientMsgId);
    if (message.isAiGenerated && message.parentId) t.streams.delete(message.parentId);
  }

  onSignal({ signal, data }) {
    const t = this.thread;
    if (signal === "typing" && t?.memoryId === data.memoryId) {
      $("typing").textContent = "Typing on another of your devices…";
      clearTimeout(this.typingTimer);
      this.typingTimer = setTimeout(() => ($("typing").textContent = ""), TYPING_SHOWN);
    } else if (signal === "ai.delta" && t?.memoryId === data.memoryId) {
      if ([...t.messages.values()].some((m) => m.isAiGenerated && m.parentId === data.replyTo)) return;
      let stream = t.streams.get(data.replyTo);
      if (!stream || data.index === 0) stream = { text: "", index: -1 }; // 0 starts over (a retry)
      if (data.index <= stream.index) return;
      stream.text += data.delta;
      stream.index = data.index;
      t.streams.set(data.replyTo, stream);
      this.renderMessages();
    }
  }

  // -- the list ----------------------------------------------------------------------------

  renderCategories() {
    const select = $("category-filter");
    const current = this.filter.categoryId;
    const sorted = [...this.categories.values()].sort(
      (a, b) => a.sortOrder - b.sortOrder || a.name.localeCompare(b.name),
    );
    select.replaceChildren(
      h("option", { value: "" }, "All categories"),
      ...sorted.map((c) => h("option", { value: c.id, selected: c.id === current }, c.name)),
    );
  }

  visibleMemories() {
    if (this.searchResults) return this.searchResults.map((id) => this.memories.get(id)).filter(Boolean);
    const when = (m) => {
      const a = this.activity.get(m.id);
      return a && a > m.updatedAt ? a : m.updatedAt;
    };
    return [...this.memories.values()]
      .filter((m) => !m.isArchived)
      .filter((m) => !this.filter.favorites || m.isFavorite)
      .filter((m) => !this.filter.categoryId || m.categoryId === this.filter.categoryId)
      .sort((a, b) => (when(a) < when(b) ? 1 : -1));
  }

  renderList() {
    const list = $("memory-list");
    const memories = this.visibleMemories();
    if (!memories.length && !$("list-status").textContent) {
      $("list-status").textContent = this.filter.favorites ? "No favourites yet." : "No memories yet: add one above.";
    } else if (memories.length && /^No (favourites|memories)/.test($("list-status").textContent)) {
      $("list-status").textContent = "";
    }
    list.replaceChildren(...memories.map((m) => this.memoryItem(m)));
  }

  memoryItem(memory) {
    const category = this.categories.get(memory.categoryId);
    const unread = Math.max(0, memory.lastMessageSeq - memory.lastReadSeq);
    const wa = memory.metadata?.source === "whatsapp";
    const current = this.thread?.memoryId === memory.id;
    const meta = [
      wa ? h("span", { class: "tag-wa" }, "WhatsApp") : null,
      category && !(wa && category.name === "WhatsApp") ? category.name : null,
      `${memory.messageCount} message${memory.messageCount === 1 ? "" : "s"}`,
    ].filter(Boolean);
    const label = `${titleOf(memory)}${memory.isFavorite ? ", favourite" : ""}${unread ? `, ${unread} unread` : ""}`;
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "memory-item",
          "aria-current": current ? "true" : null,
          "aria-label": label,
          dataset: { memoryId: memory.id },
          onclick: () => this.openThread(memory.id),
        },
        h("span", { class: "memory-title" }, memory.isFavorite ? "★ " : "", titleOf(memory)),
        unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(unread)) : null,
        h("span", { class: "memory-meta" }, ...meta.flatMap((part, i) => (i ? [" · ", part] : [part]))),
        this.matchSnippet(memory.id),
      ),
    );
  }

  // The first matching message of a search hit, its matched words marked.
  matchSnippet(memoryId) {
    const match = this.searchResults ? this.searchMatches?.get(memoryId)?.[0] : null;
    if (!match?.snippet) return null;
    return h("span", { class: "memory-snippet", dataset: { messageId: match.id } }, ...snippetNodes(match.snippet));
  }

  // -- the thread --------------------------------------------------------------------------

  async openThread(memoryId, { keepFocus = false } = {}) {
    const memory = this.memories.get(memoryId);
    const reopening = this.thread?.memoryId === memoryId;
    const old = reopening ? this.thread : null;
    this.thread = {
      memoryId,
      messages: new Map(),
      pending: old?.pending ?? new Map(), // unsent messages survive a resync
      streams: old?.streams ?? new Map(),
      hasMore: false,
      // "New messages": those unread when the thread was opened, not later live ones.
      firstUnread: memory ? memory.lastReadSeq + 1 : null,
      unreadUntil: memory ? memory.lastMessageSeq : 0,
    };
    $("thread-empty").hidden = true;
    $("thread-view").hidden = false;
    $("app").classList.add("show-thread");
    $("typing").textContent = "";
    this.renderThreadHeader();
    this.renderList();
    this.renderMessages();
    if (!keepFocus) $("message-input").focus();
    try {
      const page = await this.client.request("message.history", { memoryId, limit: HISTORY_PAGE });
      if (this.thread?.memoryId !== memoryId) return;
      for (const m of page.messages) this.storeMessage(m);
      this.thread.hasMore = page.hasMore;
      this.renderMessages();
      this.scrollToEnd();
      this.markRead();
    } catch (error) {
      showAlert(describe(error));
    }
  }

  closeThread(message) {
    const was = this.thread?.memoryId;
    this.thread = null;
    $("thread-view").hidden = true;
    $("thread-empty").hidden = false;
    $("app").classList.remove("show-thread");
    this.renderList();
    // Back on the list (a phone), the keyboard continues from the memory it left.
    const item = was && document.querySelector(`#memory-list [data-memory-id="${CSS.escape(was)}"]`);
    (item || $("search")).focus();
    if (message) showAlert(message);
  }

  renderThreadHeader() {
    const memory = this.memories.get(this.thread.memoryId);
    if (!memory) return;
    $("thread-title").textContent = titleOf(memory);
    const wa = memory.metadata?.source === "whatsapp";
    const category = this.categories.get(memory.categoryId);
    $("thread-subtitle").textContent = wa
      ? `WhatsApp · ${memory.metadata.contactName ?? "contact"} (+${memory.metadata.waId ?? "?"})`
      : [category?.name, memory.tags?.length ? memory.tags.map((t) => `#${t}`).join(" ") : null]
          .filter(Boolean)
          .join(" · ");
    const fav = $("favorite");
    fav.setAttribute("aria-pressed", String(memory.isFavorite));
    fav.textContent = memory.isFavorite ? "★ Favourite" : "☆ Favourite";
    const memoAnswers = memory.metadata?.memoAnswers === true;
    $("ask-memo-label").hidden = !this.permissions.has("access:ai") || memoAnswers || wa;
    this.attachments.allow(!wa); // WhatsApp sends take text only (docs/protocol.md)
  }

  async toggleFavorite() {
    const memory = this.memories.get(this.thread?.memoryId);
    if (!memory) return;
    try {
      this.upsertMemory(
        await this.client.request("memory.update", { memoryId: memory.id, isFavorite: !memory.isFavorite }),
      );
    } catch (error) {
      showAlert(describe(error));
    }
  }

  async loadOlder() {
    const t = this.thread;
    const seqs = [...t.messages.values()].map((m) => m.seq);
    if (!seqs.length) return;
    const scroller = $("messages-scroll");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    $("older").disabled = true;
    try {
      const page = await this.client.request("message.history", {
        memoryId: t.memoryId,
        before: Math.min(...seqs),
        limit: HISTORY_PAGE,
      });
      if (this.thread !== t) return;
      for (const m of page.messages) this.storeMessage(m);
      t.hasMore = page.hasMore;
      this.renderMessages();
      scroller.scrollTop = scroller.scrollHeight - fromBottom; // stay where the reader was
    } catch (error) {
      showAlert(describe(error));
    } finally {
      $("older").disabled = false;
    }
  }

  onTyping() {
    const now = Date.now();
    if (!this.thread || now - this.lastTyping < TYPING_EVERY) return;
    this.lastTyping = now;
    this.client.typing(this.thread.memoryId);
  }

  markRead() {
    const t = this.thread;
    if (!t || document.visibilityState === "hidden") return;
    const memory = this.memories.get(t.memoryId);
    const newest = Math.max(0, ...[...t.messages.values()].map((m) => m.seq));
    if (!memory || newest <= memory.lastReadSeq || t.reading >= newest) return;
    t.reading = newest;
    this.client
      .request("read", { memoryId: t.memoryId, seq: newest })
      .then((marker) => {
        memory.lastReadSeq = Math.max(memory.lastReadSeq, marker.seq);
        this.renderList();
      })
      .catch(() => (t.reading = 0));
  }

  onSubmit(e) {
    e.preventDefault();
    const input = $("message-input");
    const words = input.value.trim();
    if (!this.thread) return;
    const picked = this.attachments.take();
    if (picked.busy) {
      $("composer-status").textContent = "Wait for the uploads to finish, then send.";
      return;
    }
    if (!words && !picked.ids.length) return;
    const ai = !$("ask-memo-label").hidden && $("ask-memo").checked;
    const clientMsgId = this.client.newClientMsgId();
    input.value = "";
    this.attachments.clear();
    this.send({
      clientMsgId,
      content: words || namesOf(picked.files), // a message needs words: the files' names
      files: picked.files,
      attachments: picked.ids,
      messageType: picked.messageType,
      ai,
      memoryId: this.thread.memoryId,
      createdAt: new Date().toISOString(),
    });
  }

  send(draft) {
    const t = this.thread;
    if (!t || t.memoryId !== draft.memoryId) return;
    draft.state = "sending";
    draft.error = null;
    t.pending.set(draft.clientMsgId, draft);
    this.renderMessages();
    this.scrollToEnd();
    const { memoryId, clientMsgId, content, ai, attachments = [], messageType = "text" } = draft;
    const params = { memoryId, clientMsgId, content };
    if (attachments.length) Object.assign(params, { attachments, messageType });
    if (ai) params.ai = true;
    this.client
      .request("message.send", params, { timeout: SEND_TIMEOUT })
      .then((message) => {
        if (this.thread?.memoryId !== memoryId) return;
        this.storeMessage(message); // the stored message replaces the optimistic one
        this.onMessage(message, false);
      })
      .catch((error) => {
        draft.state = "failed";
        draft.error = describe(error);
        if (this.thread?.memoryId === memoryId) this.renderMessages();
      });
  }

  cancelReply(replyTo) {
    this.client.request("ai.cancel", { replyTo }).catch((error) => showAlert(describe(error)));
  }

  scrollToEnd() {
    const scroller = $("messages-scroll");
    scroller.scrollTop = scroller.scrollHeight;
  }

  renderMessages() {
    const t = this.thread;
    if (!t) return;
    const memory = this.memories.get(t.memoryId);
    const wa = memory?.metadata?.source === "whatsapp";
    const stored = [...t.messages.values()].sort((a, b) => a.seq - b.seq);
    const atEnd = isAtEnd($("messages-scroll"));
    const items = [];
    let divider = false;
    for (const m of stored) {
      const own = !m.isAiGenerated && m.metadata?.participant?.kind !== "whatsapp";
      const unread = t.firstUnread && m.seq >= t.firstUnread && m.seq <= t.unreadUntil;
      if (!divider && unread && !own && stored[0].seq < m.seq) {
        items.push(["divider", () => h("li", { class: "unread-divider", role: "separator" }, "New messages")]);
        divider = true;
      }
      items.push([`m:${m.id}:${m.updatedAt}`, () => this.messageItem(m, wa)]);
      const stream = t.streams.get(m.id);
      if (stream) items.push([`s:${m.id}:${stream.index}`, () => this.streamItem(m.id, stream)]);
    }
    for (const [replyTo, stream] of t.streams) {
      if (!t.messages.has(replyTo)) items.push([`s:${replyTo}:${stream.index}`, () => this.streamItem(replyTo, stream)]);
    }
    const waiting = this.client.state !== "connected";
    for (const d of t.pending.values()) {
      items.push([`p:${d.clientMsgId}:${d.state}:${waiting}`, () => this.pendingItem(d, waiting)]);
    }
    keyedRender($("messages"), items);
    $("older").hidden = !t.hasMore;
    if (atEnd) this.scrollToEnd();
  }

  messageItem(m, wa) {
    const participant = m.metadata?.participant;
    const contact = participant?.kind === "whatsapp";
    const kind = m.isAiGenerated ? "memo" : contact ? "contact" : "mine";
    const author = m.isAiGenerated ? "Memo" : contact ? participant.name ?? m.metadata?.contactName ?? "Contact" : "You";
    const meta = [h("time", { datetime: m.createdAt }, time(m.createdAt))];
    if (wa && kind === "mine") {
      const why = m.metadata?.whatsappError?.title ?? m.metadata?.whatsappError?.message;
      meta.push(h("span", { class: "status" }, WA_STATUS[m.status] ?? m.status, m.status === "failed" && why ? `: ${why}` : ""));
    } else if (m.isAiGenerated && m.status === "cancelled") {
      meta.push(h("span", { class: "status" }, "Stopped"));
    } else if (m.isAiGenerated && m.status === "failed") {
      meta.push(h("span", { class: "status" }, "Memo could not answer"));
    }
    return h(
      "li",
      { class: `msg ${kind}`, dataset: { seq: m.seq, status: m.status, clientMsgId: m.clientMsgId ?? "", messageId: m.id, type: m.messageType } },
      h("p", { class: "author" }, author),
      ...attachmentsView(this.client, m),
      contentShownByFiles(m) ? null : h("p", { class: "body" }, m.content),
      h("p", { class: "meta" }, ...meta),
    );
  }

  streamItem(replyTo, stream) {
    return h(
      "li",
      { class: "msg memo streaming", "aria-busy": "true", dataset: { replyTo } },
      h("p", { class: "author" }, "Memo"),
      h("p", { class: "body" }, stream.text),
      h(
        "p",
        { class: "meta" },
        h("span", {}, "Memo is writing…"),
        h("button", { type: "button", onclick: () => this.cancelReply(replyTo) }, "Stop"),
      ),
    );
  }

  pendingItem(draft, waiting) {
    const failed = draft.state === "failed";
    return h(
      "li",
      { class: "msg mine pending", dataset: { state: draft.state, clientMsgId: draft.clientMsgId } },
      h("p", { class: "author" }, "You"),
      draft.files?.length ? h("p", { class: "attachments" }, `Attached: ${namesOf(draft.files)}`) : null,
      draft.files?.length && draft.content === namesOf(draft.files) ? null : h("p", { class: "body" }, draft.content),
      h(
        "p",
        { class: "meta" },
        h("span", { class: "status" }, failed ? `Not sent: ${draft.error}` : waiting ? "Waiting for the connection…" : "Sending…"),
        failed ? h("button", { type: "button", onclick: () => this.send(draft) }, "Retry") : null,
      ),
    );
  }
}

function titleOf(memory) {
  return memory.title || memory.metadata?.contactName || "Untitled memory";
}

function isAtEnd(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
}

/** Replace children in order, reusing the elements whose key did not change (so that a
 * screen reader's live region announces only what is new). */
function keyedRender(parent, items) {
  const old = new Map();
  for (const child of parent.children) old.set(child.dataset.key, child);
  const next = items.map(([key, make]) => {
    const el = old.get(key) ?? make();
    el.dataset.key = key;
    return el;
  });
  let i = 0;
  for (; i < next.length; i++) {
    if (parent.children[i] !== next[i]) parent.insertBefore(next[i], parent.children[i] ?? null);
  }
  while (parent.children.length > next.length) parent.lastElementChild.remove();
}

// A search snippet is HTML-escaped text whose only markup is <mark>…</mark>: turn it into
// text and <mark> nodes without ever parsing it as HTML.
const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&#x27;": "'" };
function snippetNodes(snippet) {
  const text = (part) => part.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (e) => ENTITIES[e]);
  let marked = false;
  const nodes = [];
  for (const part of snippet.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>") marked = true;
    else if (part === "</mark>") marked = false;
    else if (part) nodes.push(marked ? h("mark", {}, text(part)) : text(part));
  }
  return nodes;
}
