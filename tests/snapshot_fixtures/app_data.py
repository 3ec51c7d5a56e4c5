"""botocore loading its own data and a data file of the function's (AWS_DATA_PATH points at ./data)."""

import os

import botocore.loaders

LOADER = botocore.loaders.create_loader(os.environ["AWS_DATA_PATH"])
DATA = LOADER.load_data("slipstream-test-data")
SERVICES = LOADER.list_available_services("service-2")


def handler(event, context):
    return {"data": DATA, "services": len(SERVICES), "test_services": [s for s in SERVICES if "slipstream" in s]}
