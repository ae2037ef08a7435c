"""guidedmae's version for code inside the package, which never imports the package's face (where
`__version__` is written): the installed distribution's, which packaging reads from `__version__`."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


def package_version() -> str:
    """The version of the installed guidedmae, or a sentence saying that it is not installed."""
    try:
        return version("guidedmae")
    except PackageNotFoundError:
        return "(not installed: no package metadata; pip install the project)"
