"""abistamp: stamp the torch ABI a compiled extension was built against into its wheels.

The build backend lives in :mod:`abistamp.backend`; it imports nothing heavy at import time.
"""

__version__ = "0.1.0"

#: Version of the ``abistamp.json`` record format (see docs/abi-record.md).
RECORD_SCHEMA = 1

__all__ = ["RECORD_SCHEMA", "__version__"]
