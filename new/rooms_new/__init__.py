"""rooms-new: a new OpenEnv environment from Rooms in one command (`rooms-new NAME DIR`)."""

from .derive import DeriveError, LockError, Names, derive
from .layout import ENVIRONMENT_FILES, OWN_FILES, PACKAGE_FILES, generic_files, package_files

__all__ = [
    "ENVIRONMENT_FILES",
    "OWN_FILES",
    "PACKAGE_FILES",
    "DeriveError",
    "LockError",
    "Names",
    "derive",
    "generic_files",
    "package_files",
]
