"""A regular package with a submodule and a data file."""

from importlib import resources


def data_text():
    return resources.files(__name__).joinpath("data.txt").read_text()
