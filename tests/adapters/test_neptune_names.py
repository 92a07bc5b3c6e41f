"""The Neptune adapter and the Neptune importer agree through ``names.py``, with no SDK.

A stand-in for ``neptune.Run`` records what the adapter asks for as the operations the 1.x
client writes to its offline log; the importer reads that log back. Renaming a field or a
namespace in ``names.py`` must change what the adapter writes *and* what the importer
reads, so a literal left on either side fails here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sys
import types
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.base import Event, RunInfo
from bridge.adapters.neptune import adapter as adapter_module
from bridge.adapters.neptune import names
from bridge.adapters.neptune.adapter import NeptuneAdapter
from bridge.adapters.neptune.importer import NeptuneImporter

RID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000


# ----------------------------------------------------------------------------- a stand-in SDK


class _Handle:
    """Records a run's calls as Neptune 1.x operations (``Operation.to_dict``'s shape)."""

    def __init__(self, **init: Any) -> None:
        self.ops: list[dict[str, Any]] = []
        self.present: set[str] = set()
        # What init_run itself writes (Neptune's own field names, spelled as the client does).
        self["sys/custom_run_id"] = init["custom_run_id"]
        if init.get("name"):
            self["sys/name"] = init["name"]
        self["sys/description"] = init.get("description") or ""

    def op(self, kind: str, path: str, **fields: Any) -> None:
        self.ops.append({"type": kind, "path": path.split("/"), **fields})

    def __setitem__(self, path: str, value: Any) -> None:
        if isinstance(value, datetime):
            self.op("AssignDatetime", path, value=int(value.timestamp() * 1000))
        else:
            kind = {bool: "Bool", int: "Int", float: "Float", str: "String"}[type(value)]
            self.op("Assign" + kind, path, value=value)
        self.present.add(path)

    def __getitem__(self, path: str) -> "_Field":
        return _Field(self, path)

    def __delitem__(self, path: str) -> None:
        self.op("DeleteAttribute", path)
        self.present.discard(path)

    def exists(self, path: str) -> bool:
        return path in self.present

    def wait(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def get_url(self) -> str:
        return "offline/stand-in"


class _Field:
    def __init__(self, handle: _Handle, path: str) -> None:
        self.handle, self.path = handle, path

    def extend(self, values: list[Any], steps: list[Any], timestamps: list[float]) -> None:
        kind = "LogStrings" if isinstance(values[0], str) else "LogFloats"
        points = [{"value": v, "step": s, "ts": t} for v, s, t in zip(values, steps, timestamps)]
        self.handle.op(kind, self.path, values=points)

    def upload(self, file: "_File") -> None:
        self.handle.op(file.kind, self.path, **file.fields)

    def add(self, label: str) -> None:
        self.handle.op("AddStrings", self.path, values=[label])
        self.handle.present.add(self.path)

    def remove(self, label: str) -> None:
        self.handle.op("RemoveStrings", self.path, values=[label])


class _File:
    def __init__(self, kind: str, **fields: Any) -> None:
        self.kind, self.fields = kind, fields

    @classmethod
    def from_content(cls, content: str, extension: str | None = None) -> "_File":
        data = base64.b64encode(content.encode("utf-8")).decode("ascii")
        return cls("UploadFileContent", file_content=data, ext=extension)

    @classmethod
    def from_path(cls, path: str, extension: str | None = None) -> "_File":
        return cls("UploadFile", file_path=path, ext=extension)


class _Error(Exception):
    pass


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> list[_Handle]:
    """The stand-in as ``neptune``; the handles it made."""
    made: list[_Handle] = []

    def init_run(**kw: Any) -> _Handle:
        made.append(_Handle(**kw))
        return made[-1]

    modules = {
        "neptune": types.SimpleNamespace(init_run=init_run),
        "neptune.exceptions": types.SimpleNamespace(MetadataInconsistency=_Error),
        "neptune.common.exceptions": types.SimpleNamespace(NeptuneException=_Error),
        "neptune.types": types.SimpleNamespace(File=_File),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    # The per-run data directory seam lives in the real client's internals.
    monkeypatch.setattr(adapter_module, "data_directory", lambda path: contextlib.nullcontext())
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    return made


# ----------------------------------------------------------------------------- the round trip


def _blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def _batch(blobs: Path) -> list[Event]:
    sha_a, sha_b = _blob(blobs, b"A"), _blob(blobs, b"BB")
    seq = iter(range(1, 10_000))

    def ev(kind: str, key: str | None, ts: int, **kw: Any) -> Event:
        return Event("f0", next(seq), RID, kind, key, kw.pop("step", None), ts, **kw)

    return [ev("metric", "loss", T0 + i, step=i, value=1.0 / (i + 1)) for i in range(4)] + [
        ev("param", "opt", T0, payload={"name": "adam", "lr": 0.1}),
        ev("param", "epochs", T0, payload=3),
        ev("tag", "team", T0, payload="vision"), ev("tag", "baseline", T0, payload=""),
        ev("summary", "best", T0, payload=0.2),
        ev("text", "readme.txt", T0, payload="hello"),
        ev("dict", "cfg.json", T0, payload={"a": 1}),
        ev("system", "system", T0, payload={"hostname": "h1", "cpus": 8}),
        ev("event", "checkpoint", T0 + 3, step=2, payload={"path": "x"}),
        ev("artifact", "model", T0, payload={
            "name": "model", "type": "model", "is_dir": False, "source": "t",
            "files": [{"path": "model.bin", "sha256": sha_a, "size": 1}]}),
        ev("artifact", "data", T0, payload={
            "name": "data", "type": "dataset", "is_dir": True, "source": "t",
            "files": [{"path": "x/a.bin", "sha256": sha_a, "size": 1},
                      {"path": "b.bin", "sha256": sha_b, "size": 2}]}),
    ]


def _write_and_read_back(tmp_path: Path, made: list[_Handle]) -> tuple[Any, list[Any], list[dict]]:
    """Export through the adapter, keep the operations as an offline log, import it."""
    blobs = tmp_path / "blobs"
    batch = _batch(blobs)
    adapter = NeptuneAdapter(mode="offline", data_dir=str(tmp_path / "nd"))
    info = RunInfo(run_id=RID, project="ws/proj", name="bridged", notes="the notes", group="g",
                   blob_root=blobs, start_ms=T0)
    adapter.open_run(info)
    result = adapter.export(info, batch)
    assert result.outcome.value == "success" and not result.rejected, result.rejected
    adapter.close_run(info, "KILLED", T0 + 999)
    adapter.shutdown()
    (handle,) = made
    run_dir = tmp_path / "log" / f"run__{RID}__1__stand-in"
    run_dir.mkdir(parents=True)
    lines = [json.dumps({"obj": op, "version": i}) for i, op in enumerate(handle.ops, 1)]
    (run_dir / "data-1.log").write_text("\n".join(lines) + "\n")
    importer = NeptuneImporter(tmp_path / "log", trusted_roots=[str(blobs)])
    (run,) = list(importer.runs())
    return run, list(importer.events(run)), handle.ops


def _summary(run: Any, events: list[Any]) -> dict[str, Any]:
    """What a reader of the imported run sees, in comparable form."""
    by: dict[str, dict[Any, Any]] = {}
    for e in events:
        if e.kind == "metric":
            by.setdefault("metric", {})[(e.key, e.step)] = (e.ts_ms, e.value)
        elif e.kind == "event":
            by.setdefault("event", {})[(e.key, e.step)] = (e.ts_ms, e.payload)
        elif e.kind == "artifact":
            files = sorted((rel, Path(p).read_bytes()) for rel, p in e.files)
            by.setdefault("artifact", {})[e.key] = (e.artifact_type, files)
        else:
            by.setdefault(e.kind, {})[e.key] = e.payload
    head = (run.source_id, run.project, run.name, run.notes, run.group, run.start_ms,
            run.end_ms, run.status, run.extra_tags)
    return {"head": head, **by}


EXPECTED = {
    "head": (RID, "ws/proj", "bridged", "the notes", "g", T0, T0 + 999, "KILLED", {}),
    "metric": {("loss", i): (T0 + i, pytest.approx(1.0 / (i + 1))) for i in range(4)},
    "param": {"opt": {"name": "adam", "lr": 0.1}, "epochs": 3},
    "tag": {"team": "vision", "baseline": ""},
    "summary": {"best": 0.2},
    "text": {"readme.txt": "hello"},
    "dict": {"cfg.json": {"a": 1}},
    "system": {"system": {"hostname": "h1", "cpus": 8}},
    "event": {("checkpoint", 2): (T0 + 3, {"path": "x"})},
    "artifact": {"model": ("model", [("model.bin", b"A")]),
                 "data": ("dataset", [("b.bin", b"BB"), ("x/a.bin", b"A")])},
}


def test_what_the_adapter_writes_the_importer_reads_back(tmp_path: Path, sdk: list[_Handle]) -> None:
    run, events, ops = _write_and_read_back(tmp_path, sdk)
    assert _summary(run, events) == EXPECTED
    written = {"/".join(op["path"]) for op in ops}
    for name in (names.RUN_ID, names.PROJECT, names.GROUP, names.START_TIME, names.END_TIME,
                 names.STATUS, names.SYS_FAILED, names.SYS_TAGS, f"{names.TAGS}/team",
                 f"{names.MANIFESTS}/model", f"{names.PARAMETERS}/epochs", f"{names.EVENTS}/checkpoint",
                 f"{names.FILES}/readme.txt", f"{names.ARTIFACTS}/model", f"{names.SUMMARY}/best",
                 f"{names.ENVIRONMENT}/hostname"):
        assert name in written, name
    assert isinstance(sys.modules["neptune"], types.SimpleNamespace)  # the stand-in, not the SDK


RENAMES = {
    "PARAMETERS": "hparams", "SUMMARY": "totals", "FILES": "docs", "ARTIFACTS": "outputs",
    "EVENTS": "happenings", "ENVIRONMENT": "machine", "TAGS": "bridge/labels",
    "MANIFESTS": "bridge/manifests", "RUN_ID": "bridge/id", "PROJECT": "bridge/proj",
    "GROUP": "bridge/grp", "START_TIME": "bridge/t0", "END_TIME": "bridge/t1",
    "STATUS": "bridge/state",
}


@pytest.mark.parametrize("attr", sorted(RENAMES))
def test_a_rename_in_names_moves_both_sides(tmp_path: Path, sdk: list[_Handle],
                                            monkeypatch: pytest.MonkeyPatch, attr: str) -> None:
    old, new = getattr(names, attr), RENAMES[attr]
    monkeypatch.setattr(names, attr, new)
    monkeypatch.setattr(names, "HEAD_FIELDS", tuple(new if f == old else f for f in names.HEAD_FIELDS))
    run, events, ops = _write_and_read_back(tmp_path, sdk)
    paths = ["/".join(op["path"]) for op in ops]
    assert any(p == new or p.startswith(new + "/") for p in paths), f"the adapter ignores names.{attr}"
    assert not any(p == old or p.startswith(old + "/") for p in paths), f"the adapter spells {old!r} itself"
    assert _summary(run, events) == EXPECTED, f"the importer spells {old!r} itself"


def test_the_step_encoding_is_shared(tmp_path: Path, sdk: list[_Handle],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps the adapter sends as decimals come back as the same integers, with the
    multiplier tag of the convention (so both sides use names' step functions)."""
    monkeypatch.setattr(names, "encode_step", lambda step: step / 10)
    run, events, ops = _write_and_read_back(tmp_path, sdk)
    sent = [p["step"] for op in ops if op["type"] == "LogFloats" for p in op["values"]]
    assert sent == [0.0, 0.1, 0.2, 0.3]
    got = _summary(run, events)
    assert got["head"][-1] == {names.STEP_MULTIPLIER_TAG: "10"}
    assert [k for k in got["metric"]] == [("loss", i) for i in range(4)]


# ----------------------------------------------------------------------------- names alone


def test_step_convention() -> None:
    assert [names.encode_step(s) for s in (0, 7, -3)] == [0, 7, -3]
    assert names.decode_step(7.0) == 7 and names.decode_step(None) is None
    assert names.decode_step(float("nan")) is None
    assert [names.decimal_places(s) for s in (3.0, 2.5, 0.125, 1e-9)] == [0, 1, 3, names.MAX_STEP_PLACES]
    assert names.step_multiplier(names.decimal_places(2.5)) == 10
    assert names.decode_step(2.5, names.step_multiplier(1)) == 25


def test_value_formats_round_trip() -> None:
    assert names.ms_of(names.time_value(T0 + 7)) == T0 + 7
    for payload in ({"a": [1, None]}, None, "text", 3.5):
        assert names.decode_event(names.encode_event(payload)) == payload
    assert names.decode_event("not json") == "not json"
    manifest = {"type": "model", "is_dir": False, "source": "s", "files": [], "name": "ignored"}
    assert names.decode_manifest(names.encode_manifest(manifest)) == {k: manifest[k] for k in names.MANIFEST_KEYS}
    assert names.decode_manifest("[1]") == {} and names.decode_manifest(None) == {}
    assert names.tag_label("k", "") == "k" and names.tag_label("k", "v") == "k:v"
    assert [names.is_failed(s) for s in names.STATUSES] == [False, False, True, True]
    assert names.field("a//b/", "/c") == "a/b/c"
    assert names.relative(names.FILES, f"{names.FILES}/x/y") == "x/y"
    assert names.relative(names.FILES, "filesx/y") is None


def test_readback_source_is_where_the_adapter_writes(tmp_path: Path, sdk: list[_Handle]) -> None:
    spool = tmp_path / "spool"
    assert names.readback_source(spool, "p", RID, {"name": "neptune", "mode": "offline"}) == \
        (str(spool / names.SPOOL_SUBDIR), {})
    assert names.readback_source(spool, "p", RID, {"data_dir": "/x"}) == ("/x", {})
    default = NeptuneAdapter(mode="offline", spool_dir=str(spool))
    assert default.data_dir == Path(names.readback_source(spool, "p", RID, {})[0]).resolve()
    given = NeptuneAdapter(mode="offline", data_dir=str(tmp_path / "d"), spool_dir=str(spool))
    assert given.data_dir == Path(names.readback_source(spool, "p", RID,
                                                        {"data_dir": str(tmp_path / "d")})[0]).resolve()


def test_the_package_does_not_import_the_sdk() -> None:
    import subprocess

    code = ("import bridge, bridge.adapters.neptune, sys; "
            "assert 'neptune' not in sys.modules, 'neptune imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
