"""Puts ``extract_fakes`` (this folder) on sys.path for the tests in the subfolders."""
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
