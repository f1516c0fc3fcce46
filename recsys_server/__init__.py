"""The target system: the PinSage recommender and the black-box service that hosts it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("copyattack-sim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
