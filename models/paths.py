"""Where the shared data sets live: one place, overridable with `MODELHOUSE_DATA_DIR`.

The default is `../shared/data` beside the repository (what CI and every developer machine have);
trainers, benchmarks and tests read every data set through `data_dir()`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV = "MODELHOUSE_DATA_DIR"


def data_dir(*parts: str) -> Path:
    """`$MODELHOUSE_DATA_DIR/<parts>` (default: `<repo>/../shared/data/<parts>`); not checked for existence."""
    root = os.environ.get(DATA_DIR_ENV)
    return (Path(root) if root else REPO_ROOT.parent / "shared" / "data").joinpath(*parts)
