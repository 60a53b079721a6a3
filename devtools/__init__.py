"""Development tooling, not production code: ``batchpipe dev``, the local provider emulator and
the local Kafka broker.

``batchpipe.devtools`` is linked to the repository's ``devtools/`` folder like
``batchpipe.services`` and ``batchpipe.shared``. The pipeline's processes
(``services/ingest``, ``services/dispatcher``, ``services/poller``) and ``shared/`` never import
it (a test checks); the ``batchpipe`` command, tests and benchmarks do.
"""
