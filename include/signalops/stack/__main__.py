"""``python -m signalops.stack``: the stack's command line (``signalops.stack.cli``)."""

from __future__ import annotations

import sys

from signalops.stack.cli import main

if __name__ == "__main__":
    sys.exit(main())
