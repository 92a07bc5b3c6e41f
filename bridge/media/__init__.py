"""Rich media for ``run.log``: images, histograms, tables, audio, video, html, 3-D objects.

``run.log({"samples": bridge.Image(array)}, step=i)`` records a media event at step ``i``
(:mod:`bridge.spool.media` holds its payload). The constructor runs on the caller's thread
and only copies what the caller may change afterwards (an array it reuses, a file it
overwrites, a figure it redraws); encoding (PNG, WAV, GIF), hashing and writing blobs happen
on the spool writer's thread, and a media event is committed only after its blobs are
durable. A bad input raises :class:`MediaError` here, which ``run.log`` turns into a counted
warning (or an error when the run is ``strict``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

from bridge.errors import InvalidValueError
from bridge.spool.media import extension_for, media_item, media_payload, mime_for

__all__ = ["Audio", "Histogram", "Html", "Image", "Media", "MediaError", "Object3D", "Table",
           "Video", "as_media"]

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


class Image(_FileMedia):
    """An image: a path, encoded bytes, a PIL image, a matplotlib figure, or an array
    (numpy, torch, jax) shaped HW, HWC or CHW, uint8 or float (floats in [0, 1] scale by
    255, [-1, 1] shift first, as W&B and TensorBoard read them). Arrays become PNG."""

    type = "image"
    default_mime = "image/png"

    def _take(self, data: Any) -> None:
        if _is_pil(data):
            self._array = data.copy()  # PIL, encoded on the writer
            return
        if _is_figure(data):
            self._bytes, self._mime = _figure_png(data), "image/png"  # a figure changes later
            return
        if _is_array(data) or isinstance(data, list):
            from bridge.media.encode import hwc

            try:
                self._array = hwc(_numpy(data))
            except ValueError as exc:
                raise MediaError(str(exc)) from None
            if self._array.dtype.kind not in "biuf":
                raise MediaError(f"image array of dtype {self._array.dtype} is not numeric")
            return
        raise MediaError(f"Image takes a path, bytes, a PIL image, a matplotlib figure or an "
                         f"array; got {type(data).__name__}")

    def nbytes(self) -> int:
        if _is_pil(self._array):
            return self._array.width * self._array.height * 4
        return super().nbytes()

    def _encode(self) -> tuple[bytes, str, dict[str, Any]]:
        from bridge.media import encode

        if self._array is None:
            assert self._bytes is not None
            return self._bytes, self._mime or "image/png", encode.image_facts(self._bytes)
        if _is_pil(self._array):
            img = self._array
            return encode.image_to_png(img), "image/png", {"width": img.width,
                                                           "height": img.height}
        png, w, h = encode.array_to_png(self._array)
        return png, "image/png", {"width": w, "height": h}


class Audio(_FileMedia):
    """Audio: a path or encoded bytes (WAV, MP3, FLAC, OGG), or samples shaped (n,) or
    (n, channels) with ``sample_rate`` (floats in [-1, 1]), written as 16-bit PCM WAV."""

    type = "audio"
    default_mime = "audio/wav"

    def __init__(self, data: Any, sample_rate: int | None = None,
                 caption: str | None = None) -> None:
        self.sample_rate = sample_rate
        super().__init__(data, caption)

    def _take(self, data: Any) -> None:
        if not (_is_array(data) or isinstance(data, list)):
            raise MediaError(f"Audio takes a path, bytes or an array; got {type(data).__name__}")
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise MediaError("Audio from samples needs sample_rate, a positive integer")
        self._array = _numpy(data)
        if self._array.ndim not in (1, 2):
            raise MediaError(f"audio samples must be (n,) or (n, channels), got shape "
                             f"{self._array.shape}")

    def _encode(self) -> tuple[bytes, str, dict[str, Any]]:
        if self._array is None:
            return super()._encode()[0], self._mime or "audio/wav", {
                "sample_rate": self.sample_rate}
        from bridge.media.encode import wav_from_array

        wav, seconds = wav_from_array(self._array, self.sample_rate or 1)
        return wav, "audio/wav", {"sample_rate": self.sample_rate,
                                  "duration": round(seconds, 6)}


class Video(_FileMedia):
    """Video: a path or encoded bytes (MP4, WebM, GIF), or frames shaped (T, C, H, W) as
    W&B takes them (or (T, H, W, C)), written as an animated GIF at ``fps``."""

    type = "video"
    default_mime = "video/mp4"

    def __init__(self, data: Any, fps: float = 4, caption: str | None = None,
                 format: str | None = None) -> None:
        self.fps = fps
        super().__init__(data, caption)
        if format is not None and self._bytes is not None:
            self._mime = mime_for(f"x.{format}", self._mime or "video/mp4")

    def _take(self, data: Any) -> None:
        if not _is_array(data):
            raise MediaError(f"Video takes a path, bytes or an array; got {type(data).__name__}")
        self._array = _numpy(data)
        if self._array.ndim != 4:
            raise MediaError(f"video frames must be (T, C, H, W) or (T, H, W, C), got shape "
                             f"{self._array.shape}")

    def _encode(self) -> tuple[bytes, str, dict[str, Any]]:
        if self._array is None:
            content, mime, _ = super()._encode()
            return content, mime, {"fps": self.fps}
        from bridge.media.encode import gif_from_frames

        gif, w, h, n = gif_from_frames(self._array, float(self.fps))
        return gif, "image/gif", {"width": w, "height": h, "fps": self.fps, "frames": n}


class Html(_FileMedia):
    """An HTML page: a string of HTML, or a path to an .html file."""

    type = "html"
    default_mime = "text/html"

    def __init__(self, data: Any, caption: str | None = None) -> None:
        if isinstance(data, str) and not os.path.isfile(data):
            data = data.encode("utf-8")
        super().__init__(data, caption)
        self._mime = "text/html"


class Object3D(_FileMedia):
    """A 3-D object: a path (.glb, .gltf, .obj, .stl, .pts.json) or a point cloud array
    shaped (N, 3) xyz, (N, 4) xyz+category or (N, 6) xyz+rgb, stored as JSON points."""

    type = "object3d"
    default_mime = "application/json"

    def _take(self, data: Any) -> None:
        if not _is_array(data):
            raise MediaError(f"Object3D takes a path, bytes or a point array; got "
                             f"{type(data).__name__}")
        arr = _numpy(data)
        if arr.ndim != 2 or arr.shape[1] not in (3, 4, 6):
            raise MediaError(f"a point cloud must be (N, 3), (N, 4) or (N, 6), got {arr.shape}")
        self._array = arr

    def _encode(self) -> tuple[bytes, str, dict[str, Any]]:
        if self._array is None:
            return super()._encode()
        import json

        points = json.dumps(self._array.astype(float).tolist()).encode()
        self._name = self._name or None
        return points, "application/json", {"points": int(self._array.shape[0])}

    def items(self, store: Store, name: str) -> list[dict[str, Any]]:
        out = super().items(store, name)
        if self._array is not None:
            out[0]["name"] = f"{name}.pts.json"
        return out


class Histogram(Media):
    """A histogram: of ``values`` in ``bins`` equal bins (computed on the writer thread), or
    given as ``edges`` (n + 1) and ``counts`` (n). NaN and infinite values are left out."""

    type = "histogram"

    def __init__(self, values: Any = None, bins: int = 64, *, edges: Sequence[float] | None = None,
                 counts: Sequence[float] | None = None) -> None:
        self._values = None
        self._edges: list[float] | None = None
        self._counts: list[float] | None = None
        if values is not None:
            if not isinstance(bins, int) or bins < 1:
                raise MediaError(f"bins must be a positive integer, got {bins!r}")
            self._values = _numpy(values).ravel()
            if self._values.dtype.kind not in "biuf":
                raise MediaError(f"histogram values of dtype {self._values.dtype} are not numeric")
            self.bins = bins
        elif edges is not None and counts is not None:
            e = [float(x) for x in _numpy(edges).ravel()]
            c = [float(x) for x in _numpy(counts).ravel()]
            if len(e) != len(c) + 1:
                raise MediaError(f"a histogram needs len(edges) == len(counts) + 1, got "
                                 f"{len(e)} edges and {len(c)} counts")
            self._edges, self._counts = e, c
        else:
            raise MediaError("Histogram needs values, or edges and counts")

    def nbytes(self) -> int:
        return int(getattr(self._values, "nbytes", 1024))

    def data(self) -> dict[str, Any]:
        if self._values is not None:
            import numpy as np

            v = self._values.astype(np.float64)
            v = v[np.isfinite(v)]
            counts, edges = np.histogram(v, bins=self.bins)
            return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
        return {"edges": self._edges, "counts": self._counts}


def _cell(value: Any) -> Any:
    """A table cell: a JSON scalar, or media (a nested payload, stored by the writer)."""
    if isinstance(value, Media) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except Exception:
            pass
    if _is_pil(value) or _is_figure(value):
        return Image(value)
    return str(value)


class Table(Media):
    """A table: ``columns`` and rows of ``data``, or a pandas ``dataframe``; a cell may be
    media (an Image, Audio...), stored as a blob and kept in its cell."""

    type = "table"

    def __init__(self, columns: Sequence[str] | None = None, data: Iterable[Sequence[Any]] | None = None,
                 dataframe: Any = None, rows: Iterable[Sequence[Any]] | None = None) -> None:
        if dataframe is not None:
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.itertuples(index=False, name=None)
        data = data if data is not None else rows
        self.columns = [str(c) for c in columns] if columns is not None else []
        self.rows = [[_cell(v) for v in row] for row in (data or [])]
        if not self.columns and self.rows:
            self.columns = [f"col{i}" for i in range(len(self.rows[0]))]
        for n, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise MediaError(f"table row {n} has {len(row)} cells for {len(self.columns)} "
                                 "columns")

    def add_data(self, *values: Any) -> None:
        """Append a row (W&B's ``Table.add_data``)."""
        if len(values) != len(self.columns):
            raise MediaError(f"a row needs {len(self.columns)} cells, got {len(values)}")
        self.rows.append([_cell(v) for v in values])

    def nbytes(self) -> int:
        return sum(c.nbytes() for row in self.rows for c in row if isinstance(c, Media)) + 1024

    def payload(self, store: Store, name: str) -> dict[str, Any]:
        rows = []
        for r, row in enumerate(self.rows):
            out = []
            for c, cell in enumerate(row):
                if isinstance(cell, Media):
                    out.append({"media": cell.payload(store, f"{name}_{r}_{c}")})
                else:
                    out.append(cell)
            rows.append(out)
        return media_payload("table", [], {"columns": self.columns, "rows": rows}, self.source)


class _Group(Media):
    """Several media of one type under one key (a list of images): one event, many items."""

    def __init__(self, members: list[Media]) -> None:
        self.type = members[0].type  # type: ignore[misc]
        self.members = members

    def nbytes(self) -> int:
        return sum(m.nbytes() for m in self.members)

    def items(self, store: Store, name: str) -> list[dict[str, Any]]:
        out = []
        for n, m in enumerate(self.members):
            out.extend(m.items(store, f"{name}_{n}"))
        return out


class _Text(Media):
    type = "text"

    def __init__(self, text: str) -> None:
        self.text = text

    def nbytes(self) -> int:
        return len(self.text)

    def data(self) -> dict[str, Any]:
        return {"text": self.text}


def __getattr__(name: str) -> Any:
    """``as_media`` lives in :mod:`bridge.media.convert`, which may reach a vendor package."""
    if name == "as_media":
        from bridge.media.convert import as_media

        return as_media
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
