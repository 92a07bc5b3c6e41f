"""ClearML: everything bridge knows about ClearML lives in this package.

- ``names``: the offline session's files, JSON fields and event types, defined once;
- ``offline``: reads a session folder or zip without the clearml SDK;
- ``importer``: ClearML offline sessions as bridge runs (``bridge import clearml``).

Importing the package never imports clearml.
"""

from bridge.adapters.clearml import names

__all__ = ["names"]
