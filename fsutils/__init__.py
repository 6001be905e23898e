"""Writing files and folders so that a reader, or a crash, never sees half of one; and telling
whether a folder's files changed.

    replacing_folder(target)        a scratch folder that takes `target`'s place when the block ends
    move_into_place(source, target) rename `source` onto `target`, a folder there moved aside first
    write_text_atomic(path, text)   a file written beside `path` and renamed over it
    files_digest(folder, pattern)   a hash of the files in a folder (datasets, adapters, the corpus)

Hand-written because the standard library renames a file over a file atomically (os.replace)
but cannot rename a folder over a folder that has content; every writer of a dataset, adapter or
checkpoint folder needs that, so it lives here once.
"""

from fsutils.folders import files_digest, move_into_place, replacing_folder, write_text_atomic

__all__ = ["files_digest", "move_into_place", "replacing_folder", "write_text_atomic"]
