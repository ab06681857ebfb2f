"""The `kdel` command line: one module per pipeline stage, assembled in `main.py`."""
