"""Leaf helpers any room may use: errors, names, what the machine can do, token helpers.

Nothing here imports another part of the package."""
