"""An alias of ``batchpipe.services.cli.support`` for ``services/dispatcher/cli.py``.

That module still imports ``settings_or_exit`` from here; delete this file once it imports
``batchpipe.services.cli.support`` instead.
"""

from __future__ import annotations

from batchpipe.services.cli.support import settings_or_exit

__all__ = ["settings_or_exit"]
