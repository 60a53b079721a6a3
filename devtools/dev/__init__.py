"""``batchpipe dev``: the whole pipeline on one machine, in one terminal, without Docker."""
