"""What runs inside build environments: settings, ABI detection, labels and pins, the record,
the wheel rewrite and the profiles, driven by the hooks in :mod:`abistamp.backend`.

Imports here are limited to the standard library, setuptools and packaging (the backend's
dependencies), and never reach :mod:`abistamp.cli` (tests/test_architecture.py holds that).
"""
