"""slipstream: a drop-in, faster AWS Lambda runtime interface client for Python, with a Rust core.

Run a function with `python -m slipstream module.handler`. Importing this package loads only the native core:
everything else is imported when it is used.
"""

from slipstream._native import __version__
from slipstream.context import LambdaContext

__all__ = ["LambdaContext", "__version__"]
