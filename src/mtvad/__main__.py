from mtvad.cli.main import app

app(prog_name="vad")
