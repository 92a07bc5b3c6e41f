"""trackio, both directions: everything bridge knows about trackio lives in this package.

- ``names``: trackio's tables, columns, config keys, media types, directories and bridge's
  log ids in its store, defined once (and ``readback_source`` for ``bridge verify``);
- ``adapter``: delivers spooled runs into a trackio directory (:class:`TrackioAdapter`);
- ``store``: the child process that writes through trackio's own ``SQLiteStorage``;
- ``media``: media events as trackio's logged values, and back;
- ``importer``: reads trackio projects (``bridge import trackio``, ``bridge verify``).

Importing the package never imports trackio.
"""

from bridge.adapters.trackio import names
from bridge.adapters.trackio.adapter import TrackioAdapter
from bridge.adapters.trackio.names import readback_source

__all__ = ["TrackioAdapter", "names", "readback_source"]
