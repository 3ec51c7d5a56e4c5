"""The event, answered as it came: decoding and encoding it is all the work."""


def handler(event, context):
    return event
