"""The ``batchpipe`` Typer app: every subcommand registered here, in one table of contents.

A process's subcommand lives beside the process it runs (``services/<name>/cli.py``), an
operator tool in this package (``services/cli/<command>.py``); both are only registered here.
Heavy imports happen inside the commands, keeping ``batchpipe --help`` fast.
"""

from __future__ import annotations

import typer

from batchpipe.devtools.dev.cli import dev_command
from batchpipe.devtools.emulator.cli import openai_emulator
from batchpipe.services.cli.config import config
from batchpipe.services.cli.costs import costs
from batchpipe.services.cli.kafka import kafka, kafka_acls, topics
from batchpipe.services.cli.results import results_app
from batchpipe.services.cli.schema import schema
from batchpipe.services.cli.submit import submit
from batchpipe.services.dispatcher.cli import dispatcher
from batchpipe.services.ingest.cli import ingest
from batchpipe.services.poller.cli import poller, status

app = typer.Typer(
    name="batchpipe",
    help=(
        "Turn a Kafka stream of LLM requests into OpenAI Batch API jobs and stream every "
        "result back. Settings come from BATCHPIPE_* environment variables (see README)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

app.command("kafka")(kafka)
app.command("topics")(topics)
app.command("kafka-acls")(kafka_acls)
app.command("schema")(schema)
app.command("config")(config)
app.command("dispatcher")(dispatcher)
app.command("emulator")(openai_emulator)
app.command("openai-emulator")(openai_emulator)  # the older name, kept for scripts
app.command("dev")(
    dev_command(
        lambda: (
            [c.name for c in app.registered_commands if c.name]
            + [g.name for g in app.registered_groups if g.name]
        )
    )
)
app.command("submit")(submit)
app.add_typer(results_app, name="results")
app.command("costs")(costs)
app.command("ingest")(ingest)
app.command("poller")(poller)
app.command("status")(status)
