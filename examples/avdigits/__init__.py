"""AV-Digits example: see README.md; the builder is build.py (a standalone script)."""
