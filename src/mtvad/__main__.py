"""`python -m mtvad ...` is the `vad` command."""

from mtvad.cli.main import app

app(prog_name="vad")
