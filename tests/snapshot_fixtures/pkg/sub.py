VALUE = 1


def fail():
    raise ValueError("raised in pkg.sub")
