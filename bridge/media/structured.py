"""Media held as data: histograms (edges and counts), tables (cells, media cells as blobs),
text points, and several media of one type under one key."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from bridge.media.base import Media, MediaError, Store, _is_figure, _is_pil, _numpy
from bridge.media.files import Image
from bridge.spool.media import media_payload

__all__ = ["Histogram", "Table"]


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
