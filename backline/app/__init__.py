"""The application: composition (controller.py), serving either PBX (serve.py), the CLI, the
settings (config.py) and the secrets they name.  Imports any layer; no lower layer imports it
but for the secret reading listed in tests/test_layers.py's KNOWN_UPWARD."""
