"""The test suite: one folder per room of the package; shared row and model builders in ``builders.py``."""
