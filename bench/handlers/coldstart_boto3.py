"""A typical function's init: boto3 imported and an S3 client created at module level. The emulator's environment
has dummy credentials and a region; creating a client makes no network call."""

import boto3

S3 = boto3.client("s3")


def handler(event, context):
    return event
