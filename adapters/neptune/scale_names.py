"""neptune-scale's (Neptune 3.x client) local files as bridge reads them, defined once.

Every run of the client writes ``<log dir>/<project>_<run id>_<ns>/run_operations.sqlite3``
(``<log dir>`` is ``.neptune`` in the working directory unless ``log_directory`` or
``NEPTUNE_LOG_DIRECTORY`` says otherwise; ``/`` of the project becomes ``_``). In async mode
an operation the server acknowledged is deleted from it, so a file left behind holds exactly
what never reached the server; in offline mode it holds the whole run. Hosted Neptune has
shut down, so nothing can sync these files any more: bridge imports them.

Nothing here imports neptune-scale or neptune_api.
"""

from __future__ import annotations

__all__ = [
    "COL_ERROR_BODY", "COL_ERROR_DETAILS", "COL_ERROR_ID", "COL_ERROR_SEQ", "COL_ERROR_TS", "COL_ERROR_TYPE",
    "COL_OPERATION", "COL_OP_TS", "COL_OP_TYPE", "COL_SEQ", "COL_UP_DESTINATION", "COL_UP_MIME",
    "COL_UP_SIZE", "COL_UP_SOURCE", "COL_UP_TEMPORARY", "EXPERIMENT_TAG", "EXTRA",
    "FORK_PARENT_TAG", "FORK_PROJECT_TAG", "FORK_STEP_TAG", "HISTOGRAM_COUNTS",
    "HISTOGRAM_DENSITIES", "KNOWN_VERSIONS", "MICRO", "OPS_FILE", "OP_CREATE_RUN",
    "OP_UPDATE_SNAPSHOT", "PROTO_MODULE", "RUN_ID_SOURCE", "SET_ADD", "SET_REMOVE", "SOURCE", "SYS_GROUP_TAGS",
    "SYS_TAGS", "T_ERRORS", "T_METADATA", "T_OPERATIONS", "T_UPLOADS",
]

SOURCE = "neptune-scale"  # bridge's name of the source (`bridge import neptune-scale ...`)
EXTRA = "neptune-scale"  # the pip extra that installs the protobuf classes (neptune_api)
# Bridge run ids are derived as the Parquet import of the same run derives them (source
# "neptune", the run's id), so a run imported both ways is one bridge run.
RUN_ID_SOURCE = "neptune"

# -- the file -------------------------------------------------------------------------------

OPS_FILE = "run_operations.sqlite3"
KNOWN_VERSIONS = ("v5",)  # metadata.version the reader was written against

T_OPERATIONS = "run_operations"  # (sequence_id, timestamp, operation_type, operation, ...)
T_METADATA = "metadata"  # (id, version, project, run_id)
T_UPLOADS = "file_upload_requests"  # (id, source_path, destination, mime_type, size_bytes, is_temporary)
T_ERRORS = "operation_errors"  # (error_id, timestamp, error_type, error_details, error_body, sequence_id)

COL_SEQ = "sequence_id"
COL_OP_TS = "timestamp"  # when the operation was queued (ms); its own timestamp is inside
COL_OP_TYPE = "operation_type"
COL_OPERATION = "operation"  # the serialized protobuf message

COL_UP_SOURCE = "source_path"  # the local file (absolute); is_temporary: bytes the client wrote
COL_UP_DESTINATION = "destination"  # the FileRef.path an operation names
COL_UP_MIME = "mime_type"
COL_UP_SIZE = "size_bytes"
COL_UP_TEMPORARY = "is_temporary"

COL_ERROR_TS = "timestamp"
COL_ERROR_TYPE = "error_type"
COL_ERROR_DETAILS = "error_details"
COL_ERROR_BODY = "error_body"  # a pickled exception as hex: never unpickled by bridge
COL_ERROR_SEQ = "sequence_id"
COL_ERROR_ID = "error_id"

OP_UPDATE_SNAPSHOT = 0  # neptune_api ...common_pb2.UpdateRunSnapshot
OP_CREATE_RUN = 1  # neptune_api ...common_pb2.Run

PROTO_MODULE = "neptune_api.proto.neptune_pb.ingest.v1.common_pb2"

# -- what the operations name ---------------------------------------------------------------

SYS_TAGS = "sys/tags"
SYS_GROUP_TAGS = "sys/group_tags"
MICRO = 1_000_000  # Step{whole, micro}: step = whole + micro / MICRO
SET_ADD, SET_REMOVE = 1, 2  # SetOperation of a ModifyStringSet value (0: NOOP)
HISTOGRAM_COUNTS = "counts"
HISTOGRAM_DENSITIES = "densities"

# -- bridge tags of an imported run ---------------------------------------------------------

EXPERIMENT_TAG = "neptune.experiment"  # Run.experiment_id: the experiment's name
FORK_PARENT_TAG = "neptune.fork.parent_run_id"  # ForkPoint.parent_run_id
FORK_PROJECT_TAG = "neptune.fork.parent_project"
FORK_STEP_TAG = "neptune.fork.step"  # the parent's (decimal) step, as Neptune wrote it
