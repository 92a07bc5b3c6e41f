"""Media stored as one file per item: images, audio, video, HTML pages, 3-D objects."""

from __future__ import annotations

import os
from typing import Any

from bridge.media.base import (MediaError, Store, _FileMedia, _figure_png, _is_array,
                               _is_figure, _is_pil, _numpy)
from bridge.spool.media import mime_for

__all__ = ["Audio", "Html", "Image", "Object3D", "Video"]


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
