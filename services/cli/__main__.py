"""``python -m batchpipe.services.cli``: the ``batchpipe`` command without its console script."""

from __future__ import annotations

from batchpipe.services.cli import main

if __name__ == "__main__":
    main()
