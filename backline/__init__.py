"""Backline: a telephony control plane for a medical practice.

Layers, top to bottom (tests/test_layers.py keeps imports pointing down): ``app/``,
``features/``, ``localpbx/``, ``render/`` and the drivers ``pbx/asterisk/`` and
``pbx/freeswitch/``, ``pbx/`` (ports, shared call path), ``journal/``, ``fax/``, ``core/`` (pure).
"""
