"""What ``run.log`` accepts as media: bridge's media values, strings, lists of media, and
objects of other libraries (PIL images, matplotlib figures, W&B's media classes).

Kept apart from :mod:`bridge.media` because converting a vendor's object reaches that
vendor's package (``bridge.adapters.wandb.media_in``), which itself builds bridge media.
"""

from __future__ import annotations

from typing import Any

from bridge.media.base import Media, _FileMedia, _is_figure, _is_pil
from bridge.media.files import Image
from bridge.media.structured import _Group, _Text

__all__ = ["as_media"]


def as_media(value: Any) -> Media | None:
    """``value`` as a media value ``run.log`` records, or None if it is not media: bridge's
    media, a string (a text point), a list of media of one type, a PIL image or a matplotlib
    figure (an Image), a W&B media object (converted by bridge's W&B package)."""
    if isinstance(value, Media):
        return value
    if isinstance(value, str):
        return _Text(value)
    if isinstance(value, (list, tuple)) and value:
        members = [as_media(v) for v in value]
        if all(isinstance(m, _FileMedia) for m in members) and len(
                {m.type for m in members}) == 1:  # type: ignore[union-attr]
            return _Group(members)  # type: ignore[arg-type]
        return None
    if _is_pil(value) or _is_figure(value):
        return Image(value)
    module = type(value).__module__
    if module.startswith("wandb"):
        from bridge.adapters.wandb.media_in import from_wandb

        return from_wandb(value)
    return None
