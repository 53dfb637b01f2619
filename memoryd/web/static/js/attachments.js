// Attachments and voice notes: the places they plug into.
//
// The composer has two hidden buttons (#attach, #voice). When POST /api/files and
// POST /api/voice/upload exist (issue 16), `enableAttachments` shows them; an upload
// returns a file id, and the send carries it: message.send {attachments: [fileId],
// messageType: "image" | "document" | "voice"}. Received attachments are already shown
// (`describeAttachments`), for example WhatsApp media.

export const FILES_ENABLED = false;

export function enableAttachments(/* composer, onFiles */) {
  // Intentionally empty until the upload routes exist: nothing is shown that cannot work.
}

export function describeAttachments(message) {
  const n = message.attachments?.length ?? 0;
  const kind = { voice: "Voice message", image: "Image", document: "Document" }[message.messageType];
  if (!n && !kind) return null;
  if (!n) return kind;
  return `${kind ?? "Attachment"}${n > 1 ? ` + ${n - 1} more` : ""} (${n} file${n > 1 ? "s" : ""})`;
}
