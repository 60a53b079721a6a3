"""Static group membership reaches every consumer group client from the settings."""

from __future__ import annotations

import socket
from pathlib import Path

from batchpipe.shared.kafka import group_instance_id
from batchpipe.shared.settings import Settings


def test_hostname_is_expanded_and_unset_stays_dynamic() -> None:
    assert group_instance_id(None) is None
    assert group_instance_id("dispatcher-{hostname}") == f"dispatcher-{socket.gethostname()}"
    assert group_instance_id("poller-0") == "poller-0"


def test_the_faust_dispatcher_is_a_static_member(tmp_path: Path) -> None:
    from batchpipe.services.dispatcher.app import create_app

    settings = Settings(dispatcher_group_instance_id="d-{hostname}", dispatcher_data_dir=tmp_path)
    app = create_app(settings)
    assert app.conf.consumer_group_instance_id == f"d-{socket.gethostname()}"
    assert (
        create_app(Settings(dispatcher_data_dir=tmp_path)).conf.consumer_group_instance_id is None
    )
