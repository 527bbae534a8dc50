"""pasture: grow good image classifiers from very little data, and measure honestly what helps.

The import of this package is cheap (no torch): `pasture --help` must start fast. The functions a
notebook calls live in `pasture.api`.
"""

__version__ = "0.1.0"
