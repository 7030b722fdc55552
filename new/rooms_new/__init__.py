"""rooms-new: a new OpenEnv environment from Rooms' template and kit in one command (`rooms-new NAME DIR`),
and its kit brought up to date by another (`rooms-new --update DIR`)."""

from .derive import DeriveError, EditedKitError, LockError, Names, Update, derive, update
from .layout import KIT, MANIFEST, generic_files, kit_files

__all__ = [
    "KIT",
    "MANIFEST",
    "DeriveError",
    "EditedKitError",
    "LockError",
    "Names",
    "Update",
    "derive",
    "generic_files",
    "kit_files",
    "update",
]
