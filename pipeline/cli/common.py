"""What every CLI shares: error -> one-line message + exit code, never a traceback for user errors."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from msa.core.errors import MsaError

Main = Callable[[argparse.Namespace], int]


def run(prog: str, parser: argparse.ArgumentParser, main: Main, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run ``main``; map typed errors and Ctrl-C to one line and an exit code."""
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep CLI output to our own lines
    try:
        return int(main(args) or 0)
    except MsaError as e:
        print(f"{prog}: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permission denied, ... : a clear line, not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
