"""The `vad` command: one module per command group, assembled in `mtvad.cli.main`."""
