"""The provider layer: one interface (``base.BatchProvider``) for every batch API, one module
per provider (``openai.py``, ``azure.py``), the routes from models to providers
(``routing.py``) and the registry that builds them from the settings (``registry.py``)."""
