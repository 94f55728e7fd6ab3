"""A typed Python client for Accord's decision API, for partner systems.

    from accord_client import AccordClient, AccordError

See `accord_client._client` for what is retried and what every error means:
every `AccordError` is no decision, to be treated as a deny.
"""

# The public names are listed once, in _client.__all__.
from accord_client._client import *  # noqa: F403
from accord_client._client import __all__ as __all__
