"""batchpipe: Kafka stream processing that turns LLM requests into provider Batch API jobs.

The importable package is ``batchpipe``; its three subpackages are the repository's top-level
folders, linked here so the tree keeps the layout the product was designed with
(``services/ingest/``, ``services/dispatcher/``, ``services/poller/``, ``shared/``):

- ``batchpipe.services`` -> ``services/``: the pipeline's processes and the ``batchpipe`` CLI;
- ``batchpipe.shared`` -> ``shared/``: settings, message contracts, topics, Kafka and provider
  helpers that the services share (services never import each other);
- ``batchpipe.devtools`` -> ``devtools/``: development tooling (``batchpipe dev``, the provider
  emulator, the local Kafka broker), which the pipeline's processes and ``shared`` never import.

Nothing installs top-level ``services``, ``shared`` or ``devtools`` packages, so the names
cannot collide with another project's. The wheel follows the links; an editable install puts
only ``src/`` on the path (hatchling's editable mode cannot add a prefix to a package path).
"""
