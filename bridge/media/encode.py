"""Encoders run on the spool writer's thread: arrays to PNG, WAV and GIF, and the facts
(width, height, duration) of files given as bytes.

numpy and Pillow are imported here, lazily: ``import bridge`` needs neither.
"""

from __future__ import annotations

import io
import wave
from typing import Any

__all__ = ["array_to_png", "gif_from_frames", "image_facts", "image_to_png", "to_uint8",
           "wav_from_array"]


def to_uint8(array: Any) -> Any:
    """Pixel values as uint8, as W&B and TensorBoard read floats: values in [-1, 0) shift
    to [0, 1] first, [0, 1] scale by 255, anything else is clipped to [0, 255]."""
    import numpy as np

    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float64, copy=False)
    a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
    if a.size and a.min() < 0 and a.min() >= -1 and a.max() <= 1:
        a = (a + 1.0) / 2.0
    if a.size and a.max() <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def hwc(array: Any) -> Any:
    """An image array as HW or HWC with C in 1, 3, 4: CHW is transposed, HW1 squeezed."""
    import numpy as np

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be HW, HWC or CHW with 1, 3 or 4 channels, "
                         f"got shape {tuple(np.shape(array))}")
    return a


def array_to_png(array: Any) -> tuple[bytes, int, int]:
    """PNG bytes, width and height of an image array (see :func:`hwc`, :func:`to_uint8`)."""
    from PIL import Image as PILImage

    a = to_uint8(hwc(array))
    img = PILImage.fromarray(a)
    return image_to_png(img), img.width, img.height


def image_to_png(img: Any) -> bytes:
    buf = io.BytesIO()
    if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_facts(data: bytes) -> dict[str, Any]:
    """Width and height of encoded image bytes (header only); {} when Pillow cannot tell."""
    try:
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(data)) as img:
            return {"width": img.width, "height": img.height}
    except Exception:
        return {}


def wav_from_array(array: Any, sample_rate: int) -> tuple[bytes, float]:
    """16-bit PCM WAV of samples shaped (n,) or (n, channels); floats are in [-1, 1]."""
    import numpy as np

    a = np.asarray(array)
    if a.ndim == 2 and a.shape[0] < a.shape[1] and a.shape[0] <= 8:
        a = a.T  # (channels, n), as torchaudio holds it
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"audio samples must be (n,) or (n, channels), got shape {a.shape}")
    if a.dtype == np.int16:
        pcm = a
    elif np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        pcm = (a.astype(np.float64) / max(abs(info.min), info.max) * 32767).astype(np.int16)
    else:
        f = np.nan_to_num(a.astype(np.float64), nan=0.0)
        pcm = (np.clip(f, -1.0, 1.0) * 32767).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(pcm).tobytes())
    return buf.getvalue(), pcm.shape[0] / float(sample_rate)


def gif_from_frames(frames: Any, fps: float) -> tuple[bytes, int, int, int]:
    """An animated GIF of frames shaped (T, C, H, W) (W&B's order) or (T, H, W, C)."""
    import numpy as np
    from PIL import Image as PILImage

    a = np.asarray(frames)
    if a.ndim != 4:
        raise ValueError(f"video frames must be (T, C, H, W) or (T, H, W, C), got shape {a.shape}")
    if a.shape[1] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (0, 2, 3, 1))
    a = to_uint8(a)
    if a.shape[-1] == 1:
        a = a[..., 0]
    images = [PILImage.fromarray(f) for f in a]
    buf = io.BytesIO()
    duration = max(1, int(round(1000.0 / fps))) if fps else 250
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration, loop=0)
    return buf.getvalue(), images[0].width, images[0].height, len(images)
