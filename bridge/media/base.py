"""What every media value shares: the base class, the one-file media, and the checks of
what a caller passes (arrays, paths, PIL images, matplotlib figures)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, ClassVar

from bridge.errors import InvalidValueError
from bridge.spool.media import extension_for, media_item, media_payload, mime_for

__all__ = ["Media", "MediaError", "Store"]

Store = Callable[[bytes], "tuple[str, int]"]  # bytes -> (sha256, size), on the writer thread


class MediaError(InvalidValueError):
    """A media value bridge cannot record (an unknown input, an array of the wrong shape)."""


def _is_array(x: Any) -> bool:
    return hasattr(x, "__array__") or hasattr(x, "__array_interface__")


def _numpy(x: Any) -> Any:
    """A private numpy copy of an array, a torch tensor (detached, on the CPU) or a list."""
    import numpy as np

    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch
        x = x.detach().cpu().numpy()
    return np.array(x, copy=True)


def _read(path: Any) -> tuple[bytes, str]:
    p = Path(os.fspath(path))
    try:
        return p.read_bytes(), p.name
    except OSError as exc:
        raise MediaError(f"cannot read {str(p)!r}: {exc}") from exc


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _figure_png(fig: Any) -> bytes:
    """A matplotlib figure (or plotly? no: matplotlib only) rendered now, as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _is_figure(x: Any) -> bool:
    return type(x).__module__.startswith("matplotlib") and hasattr(x, "savefig")


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL") and hasattr(x, "save") and hasattr(x, "mode")


class Media:
    """Base of the media values ``run.log`` records (one media event each)."""

    type: ClassVar[str] = "file"
    caption: str | None = None
    source: dict[str, Any] | None = None  # the source vendor's descriptor (see spool.media)

    def nbytes(self) -> int:
        """Memory this value holds until the writer encodes it (bounds the queue)."""
        return 1024

    def items(self, store: Store, name: str) -> list[dict[str, Any]]:
        return []

    def data(self) -> Any:
        return None

    def payload(self, store: Store, name: str) -> dict[str, Any]:
        """The event payload, blobs stored through ``store`` (called on the writer thread)."""
        return media_payload(self.type, self.items(store, name), self.data(), self.source)


class _FileMedia(Media):
    """Media whose content is one file: bytes as given, or encoded from an array later."""

    default_mime = "application/octet-stream"

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self.caption = None if caption is None else str(caption)
        self._bytes: bytes | None = None
        self._array: Any = None
        self._name: str | None = None
        self._mime: str | None = None
        if _is_path(data):
            self._bytes, self._name = _read(data)
            self._mime = mime_for(self._name, self.default_mime)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            self._bytes = bytes(data)
            self._mime = _sniff(self._bytes, self.default_mime)
        else:
            self._take(data)

    def _take(self, data: Any) -> None:
        raise MediaError(f"{type(self).__name__} cannot take {type(data).__name__}")

    def nbytes(self) -> int:
        if self._bytes is not None:
            return len(self._bytes)
        return int(getattr(self._array, "nbytes", 1024))

    def _encode(self) -> tuple[bytes, str, dict[str, Any]]:
        """(bytes, MIME type, facts) on the writer thread."""
        assert self._bytes is not None
        return self._bytes, self._mime or self.default_mime, {}

    def items(self, store: Store, name: str) -> list[dict[str, Any]]:
        content, mime, facts = self._encode()
        sha, size = store(content)
        file_name = self._name or f"{name}{extension_for(mime)}"
        return [media_item(sha, size, mime, file_name, caption=self.caption, **facts)]


def _sniff(data: bytes, default: str) -> str:
    heads = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
             (b"RIFF", "audio/wav"), (b"ID3", "audio/mpeg"), (b"fLaC", "audio/flac"),
             (b"OggS", "audio/ogg"), (b"glTF", "model/gltf-binary"), (b"BM", "image/bmp"))
    for head, mime in heads:
        if data.startswith(head):
            if mime == "audio/wav" and data[8:12] == b"WEBP":
                return "image/webp"
            return mime
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "video/webm"
    return default
