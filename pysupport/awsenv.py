"""The one environment every child process gets: loopback test credentials and no EC2 metadata
lookups (without credentials an AWS SDK asks the metadata service, which is off this machine),
and none of the variables that could steer an SDK to another endpoint, profile or session.

Importing this module applies the same to this process (boto3 clients in pytest and the
orchestrators), so nothing started from here can fall back to anything but 127.0.0.1.
`require_loopback` is the gate every endpoint passes before a client or a configuration is made.
"""
import os
import re

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "testtesttest",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
ACCESS_KEY, SECRET_KEY = AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"]
# Anything that could steer an AWS SDK away from the explicit loopback configuration.
STEERING = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN")
# The reference litestream binary exits at start when this names a bundle it cannot use.
CA_BUNDLE = "AWS_CA_BUNDLE"
_LOOPBACK = re.compile(r"^https?://(127\.\d+\.\d+\.\d+|localhost)(:\d+)?(/|$)")


def _scrub(env):
    env.update(AWS_ENV)
    for name in STEERING:
        env.pop(name, None)
    return env


_scrub(os.environ)


def child_env(extra=None, drop_ca_bundle=False):
    """Environment for a child process: ours plus AWS_ENV, without the steering variables (and
    without AWS_CA_BUNDLE if asked); `extra` is applied last (it may set other credentials)."""
    env = _scrub(dict(os.environ))
    if drop_ca_bundle:
        env.pop(CA_BUNDLE, None)
    env.update(extra or {})
    return env


def require_loopback(url):
    """`url` itself, if it is an http(s) URL on 127.0.0.0/8 or localhost; raises otherwise."""
    if not _LOOPBACK.match(url):
        raise RuntimeError("refusing non-loopback S3 endpoint %r (only 127.0.0.1 may be contacted)"
                           % url)
    return url
