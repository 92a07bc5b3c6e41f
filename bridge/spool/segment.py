"""The journal of ``durability="journal"``: logged calls in memory-mapped segment files.

Each call is appended, on the caller's thread, as one record to a preallocated,
memory-mapped segment file beside the spool file, in place of the writer's queue. The page
cache outlives the process, so a SIGKILL (of the process or its group) loses no call that
``log()`` returned from: the next opener of the spool file replays the records past the
offset the writer last committed (:mod:`bridge.spool.recover`). A power loss may lose the
page cache; that is what ``durability="fsync"`` is for.

Segment file ``spool/<file id>.<n:06d>.seg``: a 16-byte header (magic and format version),
then records, then zeros up to the preallocated size. A record is ``<u32 length><u32 crc32>``
then ``length`` bytes of ``marshal`` (one queue item: a tuple of plain values). A length of
0 ends the segment (the next one, ``n+1``, continues it). The writer records its position
``"<n>:<offset>"`` in ``meta.journal_pos`` in the same transaction as the rows it commits,
so a replay neither loses nor repeats a call. A record cut short by the kill fails its
checksum and is dropped: its ``log()`` never returned.

The hot path is one call of the appender (:mod:`bridge.spool.appender`: in C, the call
encoded straight into the map; in Python, a ``marshal.dumps``, a ``crc32`` and one
``mmap.write``): no lock and no system call. The writer thread reads the records back
(``marshal.loads``) and commits them. Segments are created and preallocated
(``posix_fallocate``, so a full disk is an error at creation rather than a SIGBUS at a page
fault) by the writer thread ahead of need; the caller only opens one itself when the spare
is not ready.
"""

from __future__ import annotations

import errno
import marshal
import mmap
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

from bridge.spool.appender import new_appender, prefault

__all__ = ["HEADER", "MAGIC", "SEGMENT_BYTES", "Journal", "Scan", "parse_pos", "plain", "scan",
           "scan_batches", "segment_path", "segments_of"]

MAGIC = b"BRIDGESEG\x00\x00\x00\x00\x00\x00\x01"  # 16 bytes: name, format version 1
HEADER = len(MAGIC)
SEGMENT_BYTES = 8 << 20
_REC = struct.Struct("<II")  # length, crc32 of the payload
# marshal format 2 has no reference table (formats 3 and 4 track every object to share
# repeats, which a record of a few scalars never has): its dumps of a logged call's tuple
# takes ~two thirds of format 4's time. marshal.loads reads every format.
_MARSHAL_FORMAT = 2
_LEN = struct.Struct("<I")
_SUFFIX = ".seg"


def segment_path(db: Path, n: int) -> Path:
    """Segment ``n`` of spool file ``db``."""
    return Path(db).with_name(f"{Path(db).stem}.{n:06d}{_SUFFIX}")


def segments_of(db: Path) -> list[tuple[int, Path]]:
    """The segment files of ``db`` present on disk, in order."""
    db = Path(db)
    out = []
    for p in db.parent.glob(f"{db.stem}.*{_SUFFIX}"):
        num = p.name[len(db.stem) + 1: -len(_SUFFIX)]
        if num.isdigit():
            out.append((int(num), p))
    return sorted(out)


def parse_pos(text: str | None) -> tuple[int, int]:
    """``meta.journal_pos`` as (segment, offset); the journal's start when never written."""
    if not text:
        return 0, HEADER
    seg, _, off = text.partition(":")
    return int(seg), int(off)


def plain(value: object) -> object:
    """``value`` with every str, int or float subclass (``Kind.METRIC``) as its base type,
    so ``marshal`` takes it; anything else that marshal refuses raises ``ValueError``."""
    if isinstance(value, (tuple, list)):
        return type(value)(plain(v) for v in value) if type(value) in (tuple, list) \
            else [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    for base in (bool, str, int, float):
        if isinstance(value, base) and type(value) is not base:
            return base(value.value if hasattr(value, "value") else value)  # type: ignore
    return value


def _create(path: Path, size: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fallocate = getattr(os, "posix_fallocate", None)  # absent on macOS
        try:
            if fallocate is None:
                raise OSError(errno.ENOSYS, "posix_fallocate is not available")
            fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            os.ftruncate(fd, size)  # a filesystem without fallocate (some network ones)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)  # the map keeps the file
    mm[:HEADER] = MAGIC
    return mm


class Journal:
    """The segments of one writer: the caller appends, the committing side advances."""

    def __init__(self, db: Path, segment_bytes: int | None = None) -> None:
        self.db = Path(db)
        self.segment_bytes = int(segment_bytes or SEGMENT_BYTES)
        self._maps: dict[int, mmap.mmap] = {0: _create(segment_path(self.db, 0),
                                                       self.segment_bytes)}
        self._write_seg = 0
        self._spare: tuple[int, mmap.mmap] | None = None
        self._spare_lock = threading.Lock()  # rotation (caller) vs spare creation (writer)
        self._read_seg = 0
        self._read_off = HEADER
        self._released = 0  # segments below this are committed and deleted
        self._closed = False
        self._full_until = 0.0  # until then, calls go to ``overflow`` (no segment could be made)
        prefault(self._maps[0])
        self._app = new_appender()  # writes the current segment (bridge.spool.appender)
        self._app.attach(self._maps[0], HEADER, 0)

    # -- the caller's side -------------------------------------------------------------

    def appender(self, on_rotate: Callable[[], None] | None = None,
                 overflow: Callable[[tuple], None] | None = None
                 ) -> tuple[Callable[[tuple], None], Callable[[str, int | None, int, list], None]]:
        """``(put(item), put_metrics(run_id, step, ts_ms, items))``: journal one queue item.

        ``overflow(item)`` takes a call the journal has no room for (the next segment cannot
        be created: a full disk), so the caller never sees the error; without it, it raises.

        The appender copies a record at its position and advances it in one C call, atomic
        under the GIL: threads that log at once need no lock. A record that does not fit
        raises (nothing written) and takes the rotation path, under a lock.
        """
        app = self._app
        dumps, crc32, pack, fmt = marshal.dumps, zlib.crc32, _REC.pack, _MARSHAL_FORMAT

        def rotate(failed: int, record: bytes) -> None:
            with self._spare_lock:
                if app.segment == failed and not self._closed:  # not rotated meanwhile
                    self._next_segment(len(record))
            if on_rotate is not None:
                on_rotate()

        def put(item: tuple) -> None:
            seg = app.segment
            try:
                buf = dumps(item, fmt)
            except ValueError:  # a str/int/float subclass (an enum member): as its plain value
                buf = dumps(plain(item), fmt)
            rec = pack(len(buf), crc32(buf)) + buf
            try:
                app.write(rec)
            except ValueError:
                self._put_slow(seg, rec, rotate, item, overflow)

        fast = getattr(app, "put_metrics", None)
        if fast is not None:  # the C appender encodes the call itself
            def put_metrics(run_id: str, step: int | None, ts_ms: int, items: list) -> None:
                if not fast(run_id, step, ts_ms, items):  # no room, or not its kind of value
                    put((0, run_id, step, ts_ms, items))
        else:
            def put_metrics(run_id: str, step: int | None, ts_ms: int, items: list) -> None:
                seg = app.segment
                try:
                    buf = dumps((0, run_id, step, ts_ms, items), fmt)
                except ValueError:
                    buf = dumps(plain((0, run_id, step, ts_ms, items)), fmt)
                rec = pack(len(buf), crc32(buf)) + buf
                try:
                    app.write(rec)
                except ValueError:
                    self._put_slow(seg, rec, rotate, (0, run_id, step, ts_ms, items), overflow)

        return put, put_metrics

    @property
    def fast_log(self) -> Callable[[str, int, Any, set], bool] | None:
        """The C appender's ``log(run_id, step, data, ok_keys)`` (None without it):
        ``run.log``'s common case, a dict of known keys and floats, journaled in one call."""
        return getattr(self._app, "log", None)

    def _put_slow(self, failed: int, rec: bytes,
                  rotate: Callable[[int, bytes], None], item: tuple,
                  overflow: Callable[[tuple], None] | None) -> None:
        while True:
            if self._closed:
                return  # the writer is closed: as with "buffered", nothing commits after it
            if overflow is not None and time.monotonic() < self._full_until:
                overflow(item)  # a segment could not be made a moment ago: not per call
                return
            try:
                rotate(failed, rec)
            except OSError:
                if overflow is None:
                    raise
                self._full_until = time.monotonic() + 1.0
                overflow(item)
                return
            failed = self._app.segment
            try:
                self._app.write(rec)
                return
            except ValueError:
                continue

    def _next_segment(self, need: int) -> mmap.mmap:
        """Seal the current segment, then publish the next (called under the spare lock)."""
        n = self._write_seg + 1
        spare = self._spare
        self._spare = None
        if spare is not None and spare[0] == n and len(spare[1]) >= HEADER + need:
            mm = spare[1]
        else:
            if spare is not None:  # too small for this record: a bigger one replaces it
                try:
                    spare[1].close()
                except BufferError:  # still being prefaulted: unmapped once that returns
                    pass
                os.unlink(segment_path(self.db, spare[0]))
            mm = _create(segment_path(self.db, n), max(self.segment_bytes, HEADER + need))
            prefault(mm)  # no spare ready: cheaper here than a fault a page on each write
        # The old map sealed first: a write that still reaches it fails from now on and
        # retries here, so once segment n is visible nothing more lands in segment n-1.
        self._app.attach(mm, HEADER, n)
        self._maps[n] = mm
        self._write_seg = n
        return mm

    # -- the committing side -----------------------------------------------------------

    def read(self, out: list, limit: int) -> tuple[bool, str | None]:
        """Append up to ``limit`` records' items past the read position to ``out``; (more
        left, the new position as stored in ``meta.journal_pos`` or None if unchanged)."""
        seg, off = self._read_seg, self._read_off
        maps = self._maps
        mm = maps[seg]
        size = len(mm)
        unpack, loads, append = _LEN.unpack_from, marshal.loads, out.append
        got = 0
        while True:
            n = unpack(mm, off)[0] if off + 8 <= size else 0
            if n == 0:
                nxt = maps.get(seg + 1)
                if nxt is None:
                    break
                # Segment seg+1 is published after seg is sealed: read again, now final.
                if off + 8 <= size and unpack(mm, off)[0]:
                    continue
                seg, mm, off = seg + 1, nxt, HEADER
                size = len(mm)
                continue
            if got >= limit:
                break
            end = off + 8 + n
            append(loads(mm[off + 8:end]))
            off = end
            got += 1
        if (seg, off) == (self._read_seg, self._read_off):
            return False, None
        self._read_seg, self._read_off = seg, off
        return got >= limit, f"{seg}:{off}"

    def committed(self, pos: str) -> None:
        """Everything up to ``pos`` is in SQLite: delete the segments before its own."""
        seg = parse_pos(pos)[0]
        while self._released < seg:
            n = self._released
            mm = self._maps.pop(n, None)
            if mm is not None:
                mm.close()
            try:
                os.unlink(segment_path(self.db, n))
            except FileNotFoundError:
                pass
            self._released = n + 1

    def backlog(self) -> int:
        """Segments written and not yet committed past."""
        return self._write_seg - self._released

    def prepare_spare(self) -> None:
        """Preallocate the next segment ahead of the caller (on the writer thread)."""
        if self._spare is not None:
            return
        with self._spare_lock:
            n = self._write_seg + 1
            if self._spare is not None or n in self._maps:
                return
            mm = _create(segment_path(self.db, n), self.segment_bytes)
            self._spare = (n, mm)
        prefault(mm)  # outside the lock: a rotation may take the spare meanwhile

    def close(self, remove: bool) -> None:
        """Unmap every segment; ``remove`` (all committed) deletes the files too."""
        with self._spare_lock:
            self._closed = True
            self._app.detach()  # releases the map it writes (a map lent out cannot close)
            maps = dict(self._maps)
            if self._spare is not None:
                maps[self._spare[0]] = self._spare[1]
                self._spare = None
            self._maps = {}
        for n, mm in maps.items():
            try:
                mm.close()
            except (BufferError, ValueError):
                pass
            if remove:
                try:
                    os.unlink(segment_path(self.db, n))
                except FileNotFoundError:
                    pass

    def abandon(self) -> None:
        """In a forked child: drop the parent's maps without touching its files."""
        self._closed = True
        self._app.detach()
        self._maps = {}
        self._spare = None


class Scan:
    """What :func:`scan` found past a position: the items, where they end, and whether the
    last record was cut short (or corrupt)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.end = (0, HEADER)
        self.torn = 0
        self.segments: list[Path] = []


def _records(data: bytes | mmap.mmap, off: int) -> Iterator[tuple[int, bytes | None]]:
    """(end offset, payload) per good record from ``off``; a ``None`` payload: a bad one."""
    size = len(data)
    while off + 8 <= size:
        n, crc = _REC.unpack_from(data, off)
        if n == 0:
            return
        end = off + 8 + n
        if end > size:
            yield off, None
            return
        payload = data[off + 8: end]
        if zlib.crc32(payload) != crc:
            yield off, None
            return
        yield end, payload
        off = end


def scan_batches(db: Path, pos: tuple[int, int], batch: int = 8192) -> Iterator[Scan]:
    """Decode the records of ``db``'s segments past ``pos`` in order, verified, ``batch``
    at a time; each :class:`Scan` ends where its last record ends (the last one may be
    empty, saying only that a record was cut short or where the journal ends)."""
    out = Scan()
    out.end = pos
    start_seg, off = pos
    for n, path in segments_of(db):
        out.segments.append(path)
        if n < start_seg:
            continue
        start = off if n == start_seg else HEADER
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            continue
        if data[:HEADER] != MAGIC:
            if any(data[:HEADER]):
                out.torn += 1  # not a segment of ours: nothing in it can be trusted
            continue  # all zeros: created, killed before its header, never written
        for end, payload in _records(data, start):
            item = None
            if payload is not None:
                try:
                    item = marshal.loads(payload)
                except (ValueError, EOFError, TypeError):
                    pass
            if item is None:
                out.torn += 1
                yield out
                return
            out.items.append(item)
            out.end = (n, end)
            if len(out.items) >= batch:
                yield out
                nxt = Scan()
                nxt.end, nxt.segments = out.end, out.segments
                out = nxt
        if out.end[0] < n:
            out.end = (n, HEADER)  # an empty segment: replay starts past it
    yield out


def scan(db: Path, pos: tuple[int, int]) -> Scan:
    """All the records past ``pos`` at once (see :func:`scan_batches`)."""
    whole = Scan()
    whole.end = pos
    for part in scan_batches(db, pos):
        whole.items += part.items
        whole.end, whole.torn, whole.segments = part.end, whole.torn + part.torn, part.segments
    return whole
