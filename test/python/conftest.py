"""Shared set-up: import the labvm package from the tree unless one is installed."""

from __future__ import annotations

import os
import sys

try:
    import labvm  # noqa: F401  (an installed package, e.g. in the e2e venv)
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
