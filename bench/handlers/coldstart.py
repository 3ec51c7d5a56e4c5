"""The smallest handler there is: a cold start is then the runtime's own start-up."""


def handler(event, context):
    return event
