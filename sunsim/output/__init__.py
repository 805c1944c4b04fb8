"""Every file sunsim writes goes through here: nothing half-written, nothing replaced by surprise.

* Files are written to a temporary file in the same folder, flushed to disk and renamed over the
  target (atomic on POSIX): a reader, a crash or a kill never sees a partial file.
* One rule for every command's outputs (:func:`claim_outputs`), checked before any work: an output
  never has the path of an input or of another output; a folder output is new, empty or marked by the
  same command; a file output is new or one the same command wrote (its folder's ledger says so).
* Folders of results are built in a private staging folder (``.staging-<pid>-*``, carrying
  :data:`STAGING_MARKER`) and published by rename. A published folder carries a marker file naming
  the command; a later publish replaces only folders that carry it, so no command deletes a folder it
  did not create. Staging folders left by a killed process are removed by the next run in the same place.
"""

from sunsim.output.files import write_atomic, write_bytes, write_figure, write_json, write_table, write_text
from sunsim.output.rule import (
    LEDGER,
    MARKER,
    Output,
    check_file_target,
    check_folder,
    check_owned_file,
    check_owned_folder,
    check_replaceable,
    claim_outputs,
    mark,
    marker_command,
    owns_file,
    record_file,
)
from sunsim.output.staging import STAGING_MARKER, STAGING_PREFIX, clean_stale_staging, process_start, publish, staging

__all__ = [
    "LEDGER", "MARKER", "STAGING_MARKER", "STAGING_PREFIX", "Output", "check_file_target", "check_folder",
    "check_owned_file", "check_owned_folder", "check_replaceable", "claim_outputs",
    "clean_stale_staging", "mark", "marker_command", "owns_file", "process_start", "publish", "record_file",
    "staging", "write_atomic", "write_bytes", "write_figure", "write_json", "write_table", "write_text",
]
