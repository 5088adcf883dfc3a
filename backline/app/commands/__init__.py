"""The ``backline`` commands, one module per command or close family of commands, each
adding its own parser; :mod:`backline.app.cli` puts them on one command line."""
