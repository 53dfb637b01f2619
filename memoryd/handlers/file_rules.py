"""Pure rules for uploads and downloads: what a file is (sniffed from its first bytes, not
from what the client says), what it may be called, and how it is served."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, unquote

import filetype

SNIFF_BYTES = 4096  # the head read before a file's type is decided

# Sniffed type -> (the type we store and serve, kind, the extension it gets). Anything else
# is refused: no HTML, SVG, scripts or executables are ever stored, so none is ever served.
ALLOWED: dict[str, tuple[str, str, str]] = {
    "image/jpeg": ("image/jpeg", "image", ".jpg"),
    "image/png": ("image/png", "image", ".png"),
    "image/gif": ("image/gif", "image", ".gif"),
    "image/webp": ("image/webp", "image", ".webp"),
    "image/heic": ("image/heic", "image", ".heic"),
    "audio/ogg": ("audio/ogg", "audio", ".ogg"),  # WhatsApp voice notes: Opus in Ogg
    "audio/mpeg": ("audio/mpeg", "audio", ".mp3"),
    "audio/x-wav": ("audio/wav", "audio", ".wav"),
    "audio/x-flac": ("audio/flac", "audio", ".flac"),
    "audio/mp4": ("audio/mp4", "audio", ".m4a"),
    "audio/aac": ("audio/aac", "audio", ".aac"),
    "audio/amr": ("audio/amr", "audio", ".amr"),
    "audio/webm": ("audio/webm", "audio", ".webm"),  # browsers' MediaRecorder: Opus in WebM
    "video/webm": ("video/webm", "video", ".webm"),
    "video/mp4": ("video/mp4", "video", ".mp4"),
    "video/quicktime": ("video/quicktime", "video", ".mov"),
    "video/3gpp": ("video/3gpp", "video", ".3gp"),
    "application/pdf": ("application/pdf", "document", ".pdf"),
    "application/zip": ("application/zip", "document", ".zip"),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "document",
        ".docx",
    ),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "document",
        ".xlsx",
    ),
    "application/vnd.oasis.opendocument.text": (
        "application/vnd.oasis.opendocument.text",
        "document",
        ".odt",
    ),
}
TEXT = ("text/plain; charset=utf-8", "document", ".txt")
# Served inline (shown in the page): media a browser renders without running anything.
INLINE_KINDS = ("image", "audio", "video")
SERVABLE = {t for t, _, _ in ALLOWED.values()} | {TEXT[0]}


def served_type(stored: str) -> tuple[str, bool]:
    """``(Content-Type, may be inline)`` for a stored type. Rows written before sniffing
    (WhatsApp media took Meta's word) may hold any type: one we would not have stored is
    served as ``application/octet-stream``, as an attachment."""
    if stored in SERVABLE:
        return stored, True
    return "application/octet-stream", False


@dataclass(frozen=True)
class Sniffed:
    content_type: str
    kind: str
    extension: str


def sniff(head: bytes) -> Sniffed | None:
    """What the bytes are, or None when they are of no type memoryd stores.

    Text counts as text only when it is UTF-8 without NUL bytes; it is stored and served
    as ``text/plain`` whatever markup it contains."""
    if not head:
        return None
    guess = filetype.guess_mime(head)
    if guess == "video/webm" and _audio_only_webm(head):
        guess = "audio/webm"
    if guess is not None:
        found = ALLOWED.get(guess)
        return Sniffed(*found) if found else None
    if b"\x00" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # a character cut at the end of the head is fine
            return None
    return Sniffed(*TEXT)


_AUDIO_CODEC = re.compile(rb"A_(?:OPUS|VORBIS|AAC|FLAC|MPEG|PCM)")
_VIDEO_CODEC = re.compile(rb"V_(?:VP8|VP9|AV1|MPEG|THEORA|UNCOMPRESSED)")


def _audio_only_webm(head: bytes) -> bool:
    """A WebM whose track list (near the start, before the first cluster) names only audio
    codecs: a browser's voice recording, stored as audio rather than video."""
    tracks = head.split(b"\x1f\x43\xb6\x75", 1)[0]  # the first Cluster ends the header
    return _AUDIO_CODEC.search(tracks) is not None and _VIDEO_CODEC.search(tracks) is None


_UNSAFE = re.compile(r'[\x00-\x1f\x7f"*/:<>?\\|]+')
_SPACES = re.compile(r"\s+")


def safe_filename(name: str | None, sniffed: Sniffed, fallback: str = "file") -> str:
    """A display name that is safe anywhere: no path, no control or reserved characters,
    no leading dots, at most 200 bytes of UTF-8, ending in the sniffed type's extension."""
    # Some clients percent-encode the name in the part's header (aiohttp does).
    raw = unicodedata.normalize("NFC", unquote(name or "").replace("\\", "/"))
    base = raw.rsplit("/", 1)[-1]
    base = _SPACES.sub(" ", _UNSAFE.sub("_", base)).strip(" .")
    stem, suffix = _split(base)
    if suffix.lower() not in _extensions(sniffed):
        stem, suffix = (base or fallback), sniffed.extension
    stem = stem or fallback
    while len((stem + suffix).encode()) > 200:
        stem = stem[:-1]
    return stem + suffix


def _split(name: str) -> tuple[str, str]:
    suffix = PurePosixPath(name).suffix if name else ""
    return (name[: -len(suffix)] if suffix else name), suffix


def _extensions(sniffed: Sniffed) -> set[str]:
    same = {sniffed.extension}
    aliases = {".jpg": {".jpeg", ".jpe"}, ".txt": {".text", ".md", ".csv", ".log"},
               ".m4a": {".mp4"}, ".ogg": {".opus", ".oga"}, ".mp3": set(),
               ".mp4": {".m4v"}, ".3gp": {".3gpp"}}  # fmt: skip
    return same | aliases.get(sniffed.extension, set())


def content_disposition(filename: str, *, inline: bool) -> str:
    """``inline`` or ``attachment`` with an ASCII ``filename`` and an RFC 5987
    ``filename*`` for the full UTF-8 name."""
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    ascii_name = ascii_name.replace('"', "_").replace("\\", "_") or "file"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """A single ``bytes=`` range as ``(start, end)`` inclusive; None to serve it all (no
    header, or one we do not split: several ranges, other units); False: unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return False
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return False
    if start < 0 or end < start:
        return None
    return start, min(end, size - 1)
