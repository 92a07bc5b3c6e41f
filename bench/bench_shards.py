"""Sharded delivery: events/s delivered by 1, 2, 4 `bridge sync --shard K/N` processes.

``python -m bench.bench_shards [--files 200] [--events 5000] [--shards 1,2,4]
[--latency-ms 20] [--rate 30] [--batch 1000] [--quick] [--json F]``

A spool of ``--files`` writer files (one finished run of ``--events`` metric points each) is
delivered to a vendor stand-in on 127.0.0.1: a small HTTP server answering each request after
a fixed latency and refusing requests beyond ``--rate`` per second with ``429`` and a
``Retry-After``. The agent reaches it through a bench-only adapter registered the way any
third-party adapter is, an entry point in the ``bridge.adapters`` group (a ``dist-info``
directory on the shard processes' ``PYTHONPATH``), so each shard is the real CLI in a process
of its own. Every trial starts from no delivery state; the stand-in counts each event it
accepted by ``(file_id, seq)``, so lost (spool events never accepted) and duplicate (accepted
twice) events are checked, and `bridge status --json` must show nothing pending.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Sequence
from urllib.parse import urlparse

from bridge.adapters.base import BaseAdapter, Event, ExportResult, Limits, RunInfo

__all__ = ["StandIn", "StandInAdapter", "main"]

ADAPTER = "bench-standin"
ROOT = Path(__file__).resolve().parent.parent


# -- the vendor stand-in --------------------------------------------------------------------


class StandIn:
    """Fixed latency per request, at most ``rate`` accepted requests a second (else 429)."""

    def __init__(self, latency_s: float, rate: float) -> None:
        self.latency_s = latency_s
        self.rate = rate
        self.lock = threading.Lock()
        self.reset()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._reply(200, stand_in.stats())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path == "/reset":
                    stand_in.reset()
                    self._reply(200, {})
                    return
                time.sleep(stand_in.latency_s)
                wait = stand_in.admit()
                if wait:
                    self._reply(429, {"error": "rate limited"},
                                {"Retry-After": f"{wait:.3f}"})
                    return
                self._reply(200, stand_in.accept(self.path, body))

            def _reply(self, code: int, doc: dict, headers: dict | None = None) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.seen: set[tuple[str, int]] = set()
            self.received = 0
            self.requests = 0
            self.throttled = 0
            self.closed: dict[str, int] = {}
            self.tokens = self.rate
            self.refilled = time.monotonic()

    def admit(self) -> float:
        """0 when the request may pass, else the seconds until it would (token bucket)."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
            self.refilled = now
            if self.tokens >= 1:
                self.tokens -= 1
                self.requests += 1
                return 0.0
            self.throttled += 1
            return max(0.001, (1 - self.tokens) / self.rate)

    def accept(self, path: str, body: dict) -> dict:
        with self.lock:
            if path == "/open":
                return {"remote_id": f"standin-{body['run_id']}"}
            if path == "/events":
                self.received += len(body["events"])
                self.seen.update((e[0], e[1]) for e in body["events"])
                return {"accepted": len(body["events"])}
            if path == "/close":
                self.closed[body["run_id"]] = self.closed.get(body["run_id"], 0) + 1
            return {}

    def stats(self) -> dict:
        with self.lock:
            return {"unique": len(self.seen), "received": self.received,
                    "requests": self.requests, "throttled": self.throttled,
                    "closed": dict(self.closed)}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class StandInAdapter(BaseAdapter):
    """The agent's side of the stand-in: one keep-alive connection per adapter instance."""

    name: ClassVar[str] = ADAPTER
    limits: ClassVar[Limits] = Limits(max_events=int(os.environ.get("BENCH_SHARDS_BATCH",
                                                                    "1000")))

    def __init__(self, url: str = "", **options: Any) -> None:
        self.url = urlparse(url)
        self.conn: http.client.HTTPConnection | None = None

    def _post(self, path: str, doc: dict) -> tuple[int, dict, float | None]:
        data = json.dumps(doc).encode()
        for attempt in (0, 1):  # one reconnect if the kept-alive connection went away
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port,
                                                       timeout=60)
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                body = json.loads(resp.read() or b"{}")
                after = resp.getheader("Retry-After")
                return resp.status, body, float(after) if after else None
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def open_run(self, run: RunInfo) -> str:
        status, body, after = self._post("/open", {"run_id": run.run_id})
        if status == 429:
            from bridge.errors import TransientError

            raise TransientError("429 on open", retry_after=after)
        return str(body["remote_id"])

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        events = [[e.file_id, e.seq, e.kind, e.key, e.step, e.value] for e in batch]
        status, _, after = self._post("/events", {"run_id": run.run_id, "events": events})
        if status == 429:
            return ExportResult.retry("429 Too Many Requests", retry_after=after)
        return ExportResult.success()

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        code, _, after = self._post("/close", {"run_id": run.run_id})
        if code == 429:
            from bridge.errors import TransientError

            raise TransientError("429 on close", retry_after=after)

    def shutdown(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _register(where: Path) -> Path:
    """A dist-info directory declaring the stand-in adapter as a ``bridge.adapters`` entry
    point: the shard processes find it as they find any installed adapter."""
    info = where / "bench_standin-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-standin\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        f"[bridge.adapters]\n{ADAPTER} = bench.bench_shards:StandInAdapter\n")
    return where


# -- the spool --------------------------------------------------------------------------------


def make_spool(spool: Path, files: int, events: int, url: str) -> int:
    """``files`` writer files, one finished run each; returns the number of spool events."""
    import bridge
    from bridge import writer_pool

    for f in range(files):
        run = bridge.init(project="shards", name=f"run-{f}", dir=spool, sync="offline",
                          backends=[{"name": ADAPTER, "url": url}])
        log = run.log
        for i in range(events):
            log({"loss": 1.0 / (i + 1 + f)}, step=i)
        run.finish()
        writer_pool.close_all()  # the next run starts a writer file of its own
    return spool_events(spool)


def spool_events(spool: Path) -> int:
    total = 0
    for db in sorted((spool / "spool").glob("*.db")):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            total += c.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return total


def _clear_state(spool: Path) -> None:
    for p in spool.glob("state*"):
        p.unlink()


def _trial(spool: Path, n: int, env: dict, stand_in: StandIn, expected: int) -> dict:
    _clear_state(spool)
    stand_in.reset()
    bridge_cli = str(Path(sys.executable).with_name("bridge"))
    cmd = [bridge_cli] if Path(bridge_cli).exists() else [sys.executable, "-m",
                                                          "bridge.cli.main"]
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd + ["sync", "--json", "--dir", str(spool)]
                              + (["--shard", f"{k}/{n}"] if n > 1 else []),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in range(n)]
    outs = [p.communicate(timeout=3600) for p in procs]
    wall = time.monotonic() - t0
    codes = [p.returncode for p in procs]
    stats = stand_in.stats()
    status = subprocess.run(cmd + ["status", "--json", "--dir", str(spool)], env=env,
                            capture_output=True, text=True, timeout=600)
    doc = json.loads(status.stdout)
    pending = sum(b["pending"] for r in doc["runs"] for b in r["backends"])
    per_shard = []
    for out, _ in outs:
        try:
            per_shard.append(sum(r["delivered"] for r in json.loads(out)["results"]))
        except (ValueError, KeyError):
            per_shard.append(-1)
    return {"shards": n, "wall_s": wall, "events_per_s": stats["unique"] / wall,
            "exit_codes": codes, "errors": [e.decode()[-300:] for _, e in outs if e.strip()]
            if any(codes) else [], "accepted": stats["unique"],
            "duplicates": stats["received"] - stats["unique"],
            "lost": expected - stats["unique"], "requests": stats["requests"],
            "throttled_429": stats["throttled"], "pending_after": pending,
            "runs_closed_twice": sum(1 for c in stats["closed"].values() if c > 1),
            "per_shard_delivered": per_shard}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200, help="writer files (one run each)")
    ap.add_argument("--events", type=int, default=5000, help="metric points per file")
    ap.add_argument("--shards", default="1,2,4", help="shard counts to compare")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="stand-in latency/request")
    ap.add_argument("--rate", type=float, default=30.0, help="stand-in requests/s before 429")
    ap.add_argument("--batch", type=int, default=1000, help="events per export request")
    ap.add_argument("--quick", action="store_true", help="40 files x 2,000 events")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.events = 40, 2000
    counts = [int(x) for x in args.shards.split(",")]
    stand_in = StandIn(args.latency_ms / 1000, args.rate)
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        spool = Path(tmp) / "spool"
        plugin = _register(Path(tmp) / "plugin")
        sys.path.insert(0, str(plugin))  # bridge.init checks the backend name here too
        importlib.invalidate_caches()
        t0 = time.monotonic()
        expected = make_spool(spool, args.files, args.events, stand_in.url)
        made = time.monotonic() - t0
        files = len(list((spool / "spool").glob("*.db")))
        print(f"spool: {files} writer files x {args.events:,} events = {expected:,} "
              f"events, written in {made:.1f} s", file=sys.stderr)
        env = {**os.environ, "BENCH_SHARDS_BATCH": str(args.batch),
               "PYTHONPATH": os.pathsep.join([str(plugin), str(ROOT),
                                              os.environ.get("PYTHONPATH", "")])}
        trials = []
        for n in counts:
            print(f"{n} shard(s)...", file=sys.stderr)
            trials.append(_trial(spool, n, env, stand_in, expected))
    stand_in.stop()
    base = trials[0]["events_per_s"] or 1.0
    print(f"## Sharded delivery ({args.files} files x {args.events:,} events = {expected:,}; "
          f"stand-in {args.latency_ms:g} ms/request, {args.rate:g} requests/s then 429; "
          f"{args.batch} events/request; {os.cpu_count()} cores)\n")
    print("| shards | wall s | events/s | vs 1 shard | requests | 429s | lost | duplicates "
          "| pending after | exit codes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for t in trials:
        t["scaling"] = t["events_per_s"] / base
        good = (t["lost"] == 0 and t["duplicates"] == 0 and t["pending_after"] == 0
                and not any(t["exit_codes"]) and t["runs_closed_twice"] == 0)
        ok &= good
        print(f"| {t['shards']} | {t['wall_s']:.1f} | {t['events_per_s']:,.0f} | "
              f"{t['scaling']:.2f}x | {t['requests']} | {t['throttled_429']} | {t['lost']} | "
              f"{t['duplicates']} | {t['pending_after']} | {t['exit_codes']} |")
        for e in t["errors"]:
            print(f"  shard error: {e}", file=sys.stderr)
    lost = sum(t["lost"] for t in trials)
    dup = sum(t["duplicates"] for t in trials)
    ratios = ", ".join(f"{t['shards']}: {t['scaling']:.2f}x" for t in trials)
    print(f"\nScaling against one shard: {ratios}.\n")
    print(f"- Target 0 lost, 0 duplicate events, nothing pending with "
          f"{', '.join(map(str, counts))} shards: {lost} lost, {dup} duplicates — "
          f"**{'met' if ok else 'MISSED'}**")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "expected": expected, "trials": trials}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
