"""A CPU-bound handler: a fixed amount of pure-Python arithmetic per invocation."""

from payloads import cpu_work


def handler(event, context):
    return {"rounds": event["rounds"], "result": cpu_work(event["rounds"])}
