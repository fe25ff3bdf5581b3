"""Testing aids: code the tests and scripts use, never the detector itself.

strict: the "strict" test device (MINIFRCNN_DEVICE=strict), NumPy underneath with CuPy's
host/device rules on top, so CuPy mistakes show up on a machine without a GPU; it also counts
device operations and host copies (tests/test_strict_backend.py, scripts/count_device_ops.py).

Importing minifrcnn does not import this subpackage: backend.py imports strict only when the
strict device is asked for (backend.array_module_for("strict")).
"""
