"""A helper module a differential handler calls into, so that tracebacks cross files and packages."""


def parse_all(values):
    return [parse_one(value) for value in values]


def parse_one(value):
    return int(value)
