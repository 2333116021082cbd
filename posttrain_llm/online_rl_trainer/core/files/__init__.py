"""File safety: atomic writes, the package cache folder, checkpoint folders, output folders that survive a full disk.

Nothing here imports another part of the package (no torch either)."""
