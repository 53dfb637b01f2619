// Attachments and voice notes: uploads from the composer, and received files shown.
//
// The API wants `Authorization` on every file request, so nothing is loaded by URL:
// thumbnails, audio and downloads are fetched as blobs with the session's token and shown
// through object URLs (the CSP allows img-src/media-src blob:). Uploads go through
// XMLHttpRequest, the one browser API that reports upload progress.
//
// Composer: the attach button (a real, keyboard-reachable file input behind it), paste
// and drag-and-drop start uploads at once (POST /api/files); the send then carries the
// file ids: message.send {attachments, messageType}. The voice button records a memo with
// MediaRecorder and uploads it with POST /api/voice/upload {audio, memoryId}: the server
// makes the voice message, and its transcript arrives later as message.updated.

import { MemorydError } from "/memoryd-client.js";
import { h } from "./dom.js";
import { describe } from "./errors.js";

export const FILES_ENABLED = true;
export const MAX_ATTACHMENTS = 5; // message.send's limit

// -- authenticated blobs ------------------------------------------------------------------

const blobUrls = new Map(); // path -> Promise<object URL>, for the page's lifetime

/** GET `path` with the session's token as a Blob; an expired token is refreshed once. */
export async function fetchBlob(client, path) {
  const get = () => fetch(path, { headers: { Authorization: `Bearer ${client.accessToken}` } });
  let response = await get();
  if (response.status === 401) {
    await client.refreshNow();
    response = await get();
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new MemorydError(body?.error?.code ?? "http_error", body?.error?.message ?? `HTTP ${response.status}`, {
      status: response.status,
      details: body?.error?.details ?? null,
    });
  }
  return response.blob();
}

/** An object URL of `path`'s bytes (one fetch per path, shared). */
export function blobUrl(client, path) {
  if (!blobUrls.has(path)) {
    const made = fetchBlob(client, path).then((blob) => URL.createObjectURL(blob));
    made.catch(() => blobUrls.delete(path)); // a later render tries again
    blobUrls.set(path, made);
  }
  return blobUrls.get(path);
}

// -- uploads ------------------------------------------------------------------------------

/** POST a multipart form with the token; resolves with the JSON body, reports progress
 * (0..1) as the bytes go out, rejects with MemorydError (its status and retryAfter). */
export function uploadForm(client, path, form, onProgress = () => {}, signal = null) {
  const once = () =>
    new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      signal?.addEventListener("abort", () => xhr.abort());
      xhr.open("POST", path);
      xhr.setRequestHeader("Authorization", `Bearer ${client.accessToken}`);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded / e.total));
      xhr.addEventListener("load", () => resolve(xhr));
      xhr.addEventListener("error", () => reject(new TypeError("network error: the upload did not reach the server")));
      xhr.addEventListener("abort", () => reject(new MemorydError("aborted", "The upload was cancelled.")));
      xhr.send(form);
    });
  return (async () => {
    let xhr = await once();
    if (xhr.status === 401 && xhr.response?.error?.code === "token_expired") {
      await client.refreshNow();
      xhr = await once();
    }
    if (xhr.status >= 200 && xhr.status < 300) return xhr.response;
    const e = xhr.response?.error;
    const retry = Number(xhr.getResponseHeader("Retry-After"));
    throw new MemorydError(e?.code ?? `http_${xhr.status}`, e?.message ?? `HTTP ${xhr.status}`, {
      status: xhr.status,
      details: e?.details ?? null,
      retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
    });
  })();
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** The message type of a send with these uploaded files. */
function messageTypeOf(files) {
  if (!files.length) return "text";
  // "voice" is for POST /api/voice/upload's messages, which get a transcript.
  return files.every((f) => f.kind === "image") ? "image" : "document";
}

/** The text of a send that has files and no words: their names (not shown twice). */
export function namesOf(files) {
  return files.map((f) => f.originalFilename || f.filename).join(", ");
}

// -- the composer -------------------------------------------------------------------------

/**
 * Show the attach and voice buttons and run their uploads. `memoryId()` is the open
 * thread's; `changed()` is called when the tray changes. Returns the composer's side:
 * `take()` (the uploaded files to send, or {busy} while some are still uploading),
 * `clear()`.
 */
export function enableAttachments(composer, { client, memoryId, changed = () => {} }) {
  const tray = h("ul", { id: "uploads", class: "uploads", "aria-label": "Attachments" });
  composer.before(tray);
  // {file (null for a voice memo), state: recording|uploading|done|failed, info, el, abort}
  const items = [];
  const input = h("input", {
    id: "attach-input",
    type: "file",
    multiple: true,
    class: "visually-hidden",
    tabindex: "-1",
    "aria-hidden": "true",
  });
  composer.append(input);
  const attach = composer.querySelector("#attach");
  attach.hidden = false;
  attach.addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  composer.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  const dropZone = composer.closest(".thread-view") ?? composer;
  dropZone.addEventListener("dragover", (e) => {
    if ([...(e.dataTransfer?.types ?? [])].includes("Files")) {
      e.preventDefault();
      dropZone.classList.add("dropping");
    }
  });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dropping"));
  dropZone.addEventListener("drop", (e) => {
    dropZone.classList.remove("dropping");
    const files = [...(e.dataTransfer?.files ?? [])];
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });

  function render() {
    tray.replaceChildren(...items.map((item) => item.el));
    tray.hidden = !items.length;
    changed();
  }

  function trayItem(item, label) {
    const progress = h("progress", { max: "100", value: "0", "aria-label": `Upload of ${label}` });
    const status = h("span", { class: "upload-status" }, "Uploading…");
    const remove = h(
      "button",
      { type: "button", class: "upload-remove", "aria-label": `Remove ${label}`, onclick: () => drop(item) },
      "×",
    );
    item.el = h("li", { class: "upload", dataset: { state: "uploading" } }, h("span", { class: "upload-name" }, label), progress, status, remove);
    item.show = (state, text, fraction) => {
      item.state = state;
      item.el.dataset.state = state;
      if (fraction !== undefined) progress.value = Math.round(fraction * 100);
      progress.hidden = state !== "uploading";
      status.textContent = text;
      // Announced when it ends (attached, or why not), not at every percent.
      if (state === "uploading" || state === "recording") status.removeAttribute("role");
      else status.setAttribute("role", state === "failed" ? "alert" : "status");
      changed();
    };
  }

  function drop(item) {
    item.cancelled = true;
    item.cancel?.();
    item.abort.abort();
    discard(item);
    forget(item);
    attach.focus();
  }

  // Uploaded and then removed: the unattached file is deleted, not left in the quota.
  function discard(item) {
    if (item.info) client.api(`/api/files/${item.info.id}`, { method: "DELETE" }).catch(() => {});
  }

  function forget(item) {
    const at = items.indexOf(item);
    if (at >= 0) items.splice(at, 1);
    render();
  }

  let allowed = true;

  function addFiles(files) {
    if (!allowed) return;
    for (const file of files) {
      const item = { file, state: "uploading", info: null, abort: new AbortController() };
      trayItem(item, file.name || "pasted file");
      items.push(item);
      if (items.filter((i) => i.file && i.state !== "failed").length > MAX_ATTACHMENTS) {
        item.show("failed", `A message holds at most ${MAX_ATTACHMENTS} files.`);
        continue;
      }
      const form = new FormData();
      form.append("file", file, file.name || "pasted");
      const progress = (f) => item.show("uploading", `Uploading… ${Math.round(f * 100)} %`, f);
      uploadForm(client, "/api/files", form, progress, item.abort.signal)
        .then(({ file: info }) => {
          item.info = info;
          if (item.cancelled) return discard(item);
          item.el.dataset.fileId = info.id;
          item.show("done", formatSize(info.fileSize));
        })
        .catch((error) => item.cancelled || item.show("failed", `Not attached: ${describeUpload(error)}`));
    }
    render();
  }

  // The voice button: a memo recorded with MediaRecorder (WebM/Opus where the browser has
  // it), uploaded as a voice note of the open memory.
  const voice = composer.querySelector("#voice");
  const canRecord = typeof MediaRecorder !== "undefined" && navigator.mediaDevices?.getUserMedia;
  voice.hidden = !canRecord;
  const allow = (yes) => {
    allowed = yes;
    attach.hidden = !yes;
    voice.hidden = !(yes && canRecord);
  };
  let recording = null; // the MediaRecorder, or true while the microphone is being opened
  voice.addEventListener("click", () => {
    if (recording === null) record();
    else if (recording !== true) recording.stop();
  });

  async function record() {
    const target = memoryId();
    if (!target) return;
    const item = { file: null, state: "recording", info: null, abort: new AbortController() };
    trayItem(item, "Voice message");
    item.show("recording", "Opening the microphone…");
    items.push(item);
    render();
    recording = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      recording = null;
      return item.show("failed", `The microphone is not available: ${error.message || error.name}.`);
    }
    if (item.cancelled) {
      recording = null;
      return stream.getTracks().forEach((t) => t.stop());
    }
    const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) =>
      MediaRecorder.isTypeSupported(t),
    );
    const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    const chunks = [];
    const started = Date.now();
    const tick = setInterval(() => item.show("recording", `Recording… ${clock(Date.now() - started)}`), 500);
    recorder.addEventListener("dataavailable", (e) => e.data.size && chunks.push(e.data));
    recorder.addEventListener("stop", () => {
      clearInterval(tick);
      stream.getTracks().forEach((t) => t.stop());
      recording = null;
      voice.setAttribute("aria-pressed", "false");
      voice.setAttribute("aria-label", "Record a voice message");
      voice.textContent = "Record";
      const blob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      sendVoice(item, blob, target, blob.type.includes("ogg") ? "voice.ogg" : "voice.webm");
    });
    recording = recorder;
    item.cancel = () => recorder.state !== "inactive" && recorder.stop();
    recorder.start(250);
    voice.setAttribute("aria-pressed", "true");
    voice.setAttribute("aria-label", "Stop recording and send");
    voice.textContent = "Stop";
    item.show("recording", "Recording… 0:00");
  }

  function sendVoice(item, blob, target, name) {
    if (item.cancelled) return;
    if (!blob.size) return item.show("failed", "Nothing was recorded.");
    const form = new FormData();
    form.append("memoryId", target);
    form.append("audio", blob, name);
    const progress = (f) => item.show("uploading", `Sending… ${Math.round(f * 100)} %`, f);
    uploadForm(client, "/api/voice/upload", form, progress, item.abort.signal)
      .then(() => {
        // The voice message arrives as message.created; the tray item has done its job.
        forget(item);
      })
      .catch((error) => item.cancelled || item.show("failed", `Voice message not sent: ${describeUpload(error)}`));
  }

  render();
  return {
    /** The files to send, or {busy: true} while any is still uploading. */
    take() {
      const picked = items.filter((i) => i.file); // voice memos send themselves
      if (picked.some((i) => i.state === "uploading")) return { busy: true };
      const files = picked.filter((i) => i.state === "done").map((i) => i.info);
      return { files, ids: files.map((f) => f.id), messageType: messageTypeOf(files) };
    },
    clear() {
      items.splice(0, items.length, ...items.filter((i) => !i.file && i.state !== "failed"));
      render();
    },
    /** Upload these files as if picked. */
    addFiles,
    /** Whether the open thread takes files (a WhatsApp thread takes text only). */
    allow,
  };
}

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** An upload's failure in words: the limits by name, whatever the status. */
export function describeUpload(error) {
  const d = error?.details ?? {};
  switch (error?.code) {
    case "file_too_large":
      return `the file is too large (${d.kind ?? "such"} files may be up to ${formatSize(d.maxBytes ?? 0)}).`;
    case "payload_too_large":
      return "the file is too large to upload.";
    case "unsupported_file_type":
      return "this type of file is not accepted (images, audio, video, PDF, office documents, ZIP and text are).";
    case "quota_exceeded":
      return `your storage is full (${formatSize(d.usedBytes ?? 0)} of ${formatSize(d.quotaBytes ?? 0)} used): delete some files first.`;
    case "empty_file":
      return "the file is empty.";
    case "rate_limited": {
      const s = Math.max(1, Math.ceil(error.retryAfter ?? 60));
      return `too many uploads for now (try again in ${s >= 90 ? `${Math.ceil(s / 60)} min` : `${s} s`}).`;
    }
    default:
      if (error?.status === 413) return "the file is too large to upload.";
      if (error?.status === 415) return "this type of file is not accepted.";
      return lower(describe(error));
  }
}

const lower = (text) => text.charAt(0).toLowerCase() + text.slice(1);

// -- received attachments -----------------------------------------------------------------

/** The files of a message (and a voice message's transcript), as elements. */
export function attachmentsView(client, message) {
  const files = message.files ?? [];
  if (!files.length) {
    const text = describeAttachments(message);
    return text ? [h("p", { class: "attachments" }, text)] : [];
  }
  const seconds = message.metadata?.transcription?.duration;
  const parts = files.map((f) => fileView(client, f, message.messageType === "voice" && { seconds }));
  if (message.messageType === "voice") parts.push(transcriptView(message));
  return [h("div", { class: "files" }, ...parts)];
}

function fileView(client, file, voice) {
  const name = file.originalFilename || file.filename;
  if (file.kind === "image" && file.thumbnailUrl) {
    const img = h("img", { class: "thumb", alt: name, width: file.metadata?.width && thumbWidth(file), height: file.metadata?.height && thumbHeight(file) });
    blobUrl(client, file.thumbnailUrl).then(
      (url) => (img.src = url),
      () => (img.alt = `${name} (the preview could not be loaded)`),
    );
    return h("figure", { class: "file image", dataset: { fileId: file.id } }, downloadLink(client, file, img), h("figcaption", {}, name));
  }
  // A voice note is audio whatever its container was sniffed as (WebM is also video).
  if (voice || file.kind === "audio" || file.fileType?.startsWith("audio/")) {
    const audio = h("audio", { controls: true, preload: "metadata", "aria-label": voice ? "Voice message" : name });
    blobUrl(client, file.url).then((url) => (audio.src = url), () => {});
    return h(
      "div",
      { class: "file audio", dataset: { fileId: file.id } },
      voice ? h("span", { class: "file-label" }, "Voice message", voice.seconds ? ` · ${clock(voice.seconds * 1000)}` : "") : null,
      audio,
      voice ? null : downloadLink(client, file, `${name} (${formatSize(file.fileSize)})`),
    );
  }
  return h(
    "p",
    { class: "file document", dataset: { fileId: file.id } },
    downloadLink(client, file, name),
    h("span", { class: "file-size" }, ` ${formatSize(file.fileSize)}`),
  );
}

const THUMB = 240; // CSS px of the shown preview's longer side
function thumbWidth(file) {
  const { width, height } = file.metadata;
  return Math.round(width >= height ? Math.min(THUMB, width) : (Math.min(THUMB, height) * width) / height);
}
function thumbHeight(file) {
  const { width, height } = file.metadata;
  return Math.round(height > width ? Math.min(THUMB, height) : (Math.min(THUMB, width) * height) / width);
}

/** A link that downloads the file: fetched with the token, then saved from a blob. */
function downloadLink(client, file, content) {
  const name = file.originalFilename || file.filename;
  const link = h("a", { href: file.url, class: "download", download: name, title: `Download ${name}` }, content);
  link.addEventListener("click", async (e) => {
    if (link.dataset.ready) return; // the object URL: the browser saves it
    e.preventDefault();
    link.setAttribute("aria-busy", "true");
    try {
      link.href = await blobUrl(client, file.url);
      link.dataset.ready = "true";
      link.click();
    } catch (error) {
      link.after(h("span", { class: "file-error", role: "alert" }, ` Download failed: ${lower(describe(error))}`));
    } finally {
      link.removeAttribute("aria-busy");
    }
  });
  return link;
}

function transcriptView(message) {
  const t = message.metadata?.transcription;
  let text;
  let state;
  if (!t) [text, state] = ["Transcribing…", "processing"];
  else if (t.status === "completed") [text, state] = [t.text || "(no words recognised)", "completed"];
  else if (t.status === "failed") [text, state] = [`No transcript: ${t.error || "the recognizer failed"}.`, "failed"];
  else [text, state] = ["Transcribing…", t.status];
  return h("p", { class: "transcript", dataset: { state }, "aria-label": "Transcript" }, text);
}

/** Whether the message's content is only what the files already show (their names, or a
 * voice message's transcript), so the body is not shown twice. */
export function contentShownByFiles(message) {
  const files = message.files ?? [];
  if (!files.length) return false;
  if (message.messageType === "voice") {
    const t = message.metadata?.transcription;
    return !message.content || (t?.status === "completed" && message.content === t.text);
  }
  return message.content === namesOf(files);
}

export function describeAttachments(message) {
  const n = message.attachments?.length ?? 0;
  const kind = { voice: "Voice message", image: "Image", document: "Document" }[message.messageType];
  if (!n && !kind) return null;
  if (!n) return kind;
  return `${kind ?? "Attachment"}${n > 1 ? ` + ${n - 1} more` : ""} (${n} file${n > 1 ? "s" : ""})`;
}
