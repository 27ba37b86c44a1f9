"""Moved to pysupport/s3proxy.py; kept so that test modules importing it still work."""
from pysupport.s3proxy import (FAULT_KINDS, RandomFaults, Request, S3Proxy,  # noqa: F401
                               random_faults, self_signed_cert)
