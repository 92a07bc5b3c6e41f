"""Comet, both directions: everything bridge knows about Comet lives in this package.

- ``names``: Comet's names and formats (the archive ledger, bridge's and Comet's "others",
  asset metadata keys, archive members, the quiet settings), defined once;
- ``adapter``: delivers spooled runs to Comet, offline archives or online (:class:`CometAdapter`);
- ``importer``: reads Comet experiments back (``bridge import``, ``bridge verify``);
- ``media``, ``media_in``: media events as Comet's own media calls, and back;
- ``offline``: reads Comet offline archives without comet_ml;
- ``sdk``: imports comet_ml without leaving a setting behind in the host process.

Importing the package never imports comet_ml.
"""

from bridge.adapters.comet import names
from bridge.adapters.comet.adapter import CometAdapter
from bridge.adapters.comet.names import LEDGER_NAME, experiment_key_for, ledger_uids, readback_source

__all__ = ["CometAdapter", "LEDGER_NAME", "experiment_key_for", "ledger_uids", "names",
           "readback_source"]
