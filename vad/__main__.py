from vad.cli import app

app(prog_name="vad")
