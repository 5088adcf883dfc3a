"""The application: composition (controller.py), serving either PBX (serve.py), the CLI
(cli.py, a module per command in commands/), the settings (config.py, a module per section
in settings/) and the secrets they name.  Imports any layer; no lower layer imports it
but for the secret reading listed in tests/test_layers.py's KNOWN_UPWARD."""
