"""Moved to pysupport/ports.py; kept so that test modules importing it still work."""
from pysupport.ports import closed_port, free_s3_port

__all__ = ["closed_port", "free_s3_port"]
