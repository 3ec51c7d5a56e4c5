"""A typical function: boto3 imported and an S3 client created at module level (dummy credentials, no call)."""

import boto3

S3 = boto3.client("s3")


def handler(event, context):
    return {"region": S3.meta.region_name, "operations": len(S3.meta.service_model.operation_names)}
