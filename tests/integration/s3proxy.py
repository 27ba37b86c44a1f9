"""Moved to pysupport/s3proxy.py; kept so that test modules importing it still work."""
from pysupport.s3proxy import FAULT_KINDS, RandomFaults, Request, S3Proxy, random_faults, self_signed_cert

__all__ = ["FAULT_KINDS", "RandomFaults", "Request", "S3Proxy", "random_faults", "self_signed_cert"]
