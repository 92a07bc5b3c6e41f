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

from typing import Any

from bridge.media.base import Media, MediaError
from bridge.media.files import Audio, Html, Image, Object3D, Video
from bridge.media.structured import Histogram, Table

__all__ = ["Audio", "Histogram", "Html", "Image", "Media", "MediaError", "Object3D", "Table",
           "Video", "as_media"]


def __getattr__(name: str) -> Any:
    """``as_media`` lives in :mod:`bridge.media.convert`, which may reach a vendor package."""
    if name == "as_media":
        from bridge.media.convert import as_media

        return as_media
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
