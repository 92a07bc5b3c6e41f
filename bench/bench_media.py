"""Caller time of logging one 224×224×3 uint8 image per step: bridge beside W&B and MLflow.

Run ``python -m bench.bench_media [--quick] [--no-wandb] [--json out.json]``.

Contenders, each in its own child process, offline or local, no key, no network:

- bridge ``run.log({"samples": bridge.Image(arr)}, step=i)`` (``sync="offline"``): the
  caller copies the array; PNG encoding, hashing and the blob write run on the writer thread;
- ``wandb.log({"samples": wandb.Image(arr)}, step=i)`` offline (wandb encodes on the caller);
- ``mlflow.log_image(arr, key="samples", step=i)`` into a file store (MLflow writes the PNG
  and its thumbnail on the caller).

The images are natural-looking (gradients plus noise, 8 different ones in turn), so the PNG
is smaller than the raw array as with real data. Timing is ``bench_vendors``' (alternated
rounds, single calls and batches of 100, background work left to finish between turns,
untimed). The *sustained* figure is bridge's own: a loop of 2,000 calls without a pause,
whose median includes the writer thread encoding while the caller logs.

A benchmark, not a test: nothing asserts; the targets are printed as met or missed.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_vendors import _BATCH, _Contender, run as alternate
from bench.common import header, mark, meta, pct

__all__ = ["main"]

TARGET_VS_WANDB = 20.0
_SIDE = 224


def _images(n: int = 8) -> list:
    import numpy as np

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:_SIDE, 0:_SIDE]
    out = []
    for k in range(n):
        base = np.stack([(x + 9 * k) % 256, (y * 2 + 5 * k) % 256, ((x + y) // 2) % 256], -1)
        noise = rng.integers(0, 12, base.shape)
        out.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return out


class _ImageContender(_Contender):
    """Logs ``{"samples": <array>}``; the pool holds 8 arrays, reused as a loader would."""

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        self.pool = [{"samples": a} for a in _images()] * 16  # 128 entries, 8 arrays


class BridgeImage(_ImageContender):
    name = "bridge run.log(bridge.Image)"

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        import bridge

        self.run = bridge.init(project="bench", name="media", dir=self.tmp / "spool",
                               sync="offline")
        self.run.flush()
        run, Image = self.run, bridge.Image

        def log(d: dict, step: int) -> None:
            run.log({"samples": Image(d["samples"])}, step=step)

        self.log = log

    def flush(self) -> None:
        self.run.flush()

    def sustained(self, n: int) -> dict:
        """``n`` calls without a pause: the writer encodes while the caller logs."""
        self.settle()
        times = self._per_call(n)
        t0 = time.perf_counter()
        self.run.flush()
        drain = time.perf_counter() - t0
        return {"median_ns": statistics.median(times), "p99_ns": pct(sorted(times), 0.99),
                "drain_s": drain}

    def storage(self) -> dict:
        """Blob bytes per distinct image beside a plain PNG of the same array (Pillow)."""
        from PIL import Image as PILImage

        self.run.flush()
        blobs = [p for p in (self.tmp / "spool" / "blobs").rglob("*") if p.is_file()]
        png = []
        for a in _images():
            buf = io.BytesIO()
            PILImage.fromarray(a).save(buf, format="PNG")
            png.append(len(buf.getvalue()))
        return {"blobs": len(blobs), "blob_bytes": sum(p.stat().st_size for p in blobs),
                "png_bytes": sum(png), "raw_bytes": 8 * _SIDE * _SIDE * 3}

    def close(self) -> None:
        self.run.finish()


class WandbImage(_ImageContender):
    name = "wandb.log(wandb.Image) offline"

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        from bench.bench_log import _wandb

        made = _wandb(self.tmp)
        if made is None:
            raise RuntimeError("wandb is not importable")
        contender, self._finish = made
        import wandb

        wlog = contender.log

        def log(d: dict, step: int) -> None:
            wlog({"samples": wandb.Image(d["samples"])}, step=step)

        self.log = log

    def close(self) -> None:
        self._finish()


class MlflowImage(_ImageContender):
    name = "mlflow.log_image file store"

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        import mlflow

        mlflow.set_tracking_uri((self.tmp / "mlruns").as_uri())
        mlflow.set_experiment("bench")
        mlflow.start_run()
        self.mlflow = mlflow

        def log(d: dict, step: int) -> None:
            mlflow.log_image(d["samples"], key="samples", step=step)

        self.log = log

    def close(self) -> None:
        self.mlflow.end_run()


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def render(m: dict, res: dict, extra: dict, rounds: int, turn_s: float) -> str:
    L = header("Caller time of an image per step (`bench/bench_media.py`)", m)
    L.append(f"One 224×224×3 uint8 image per call, each contender in its own child process, "
             f"alternated in {rounds} rounds (~{turn_s} s per turn and mode). *median / p99*: "
             "single calls; *batch*: median of (batch of 100 calls / 100). Times in ms. "
             "*× bridge*: the contender's cost over bridge's.")
    L.append("")
    L.append("| contender | calls | median | p99 | batch | × bridge (median) | × bridge (batch) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    rows = res["contenders"]
    br = rows.get(BridgeImage.name)
    for name, r in rows.items():
        xm = r["median_ns"] / br["median_ns"] if br and br["median_ns"] else float("nan")
        xb = r["batch_ns"] / br["batch_ns"] if br and br["batch_ns"] else float("nan")
        L.append(f"| {name} | {r['calls']:,} | {_ms(r['median_ns'])} | {_ms(r['p99_ns'])} | "
                 f"{_ms(r['batch_ns'])} | {xm:,.1f}× | {xb:,.1f}× |")
    for name, why in res["failed"].items():
        L.append(f"| {name} | — | failed to start: {why} | | | | |")
    L.append("")
    s = extra.get("sustained")
    if s:
        L.append(f"Sustained, bridge: {s['calls']:,} calls in a row, median "
                 f"{_ms(s['median_ns'])} ms, p99 {_ms(s['p99_ns'])} ms; `flush()` after "
                 f"the loop waited {s['drain_s']:.2f} s for the writer to encode the rest.")
    st = extra.get("storage")
    if st:
        L.append(f"Storage: {st['blobs']} blobs for 8 distinct images (deduplicated), "
                 f"{st['blob_bytes']:,} bytes; the same arrays as plain PNG (Pillow) "
                 f"{st['png_bytes']:,} bytes, raw {st['raw_bytes']:,} bytes.")
    L.append("")
    w = rows.get(WandbImage.name)
    if w and br:
        xm, xb = w["median_ns"] / br["median_ns"], w["batch_ns"] / br["batch_ns"]
        L.append(f"- Target bridge ≥ {TARGET_VS_WANDB:.0f}× cheaper than `wandb.log` with an "
                 f"image: {xm:.0f}× by median, {xb:.0f}× by batch — "
                 f"**{mark(min(xm, xb) >= TARGET_VS_WANDB)}**")
    else:
        L.append(f"- Target bridge ≥ {TARGET_VS_WANDB:.0f}× cheaper than `wandb.log` with an "
                 "image: not measured")
    if st:
        L.append(f"- Target blob storage per image ≤ its PNG: {st['blob_bytes']:,} ≤ "
                 f"{st['png_bytes']:,} bytes — **{mark(st['blob_bytes'] <= st['png_bytes'])}**")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_media",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 short rounds")
    ap.add_argument("--no-wandb", action="store_true", help="skip wandb.log offline")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    rounds, turn_s = (2, 0.3) if args.quick else (5, 1.0)
    m = meta("bench.bench_media", ("mlflow", "wandb", "numpy", "pillow"))
    extra: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-media-") as d:
        res = alternate(Path(d), rounds, turn_s, not args.no_wandb,
                        [BridgeImage, WandbImage, MlflowImage])
        print("  sustained bridge loop", file=sys.stderr, flush=True)
        solo = BridgeImage(str(Path(d) / "solo"))
        n = 500 if args.quick else 2000
        extra["sustained"] = {"calls": n, **solo.sustained(n)}
        extra["storage"] = solo.storage()
        solo.close()
    print(render(m, res, extra, rounds, turn_s))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "results": res, **extra}, indent=2,
                                              default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
