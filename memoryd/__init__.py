"""memoryd: the real-time messaging backend of the Memory App."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memoryd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
