"""SQS on moto_server for the collector and dead-letter tests: a client, queues with a redrive policy,
and messages failed until SQS dead-letters them. (moto_server itself: the conftest `moto` fixture.)"""

from __future__ import annotations

import json

import boto3

NS = "123456789012/us-east-1"  # moto's default account, and the region used here


def sqs(moto):
    return boto3.client("sqs", endpoint_url=moto.url, region_name="us-east-1")


def make_queue(client, name, dlq_arn=None, fifo=False, max_receive=2):
    attrs = {"VisibilityTimeout": "0"}
    if fifo:
        attrs |= {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    if dlq_arn:
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)})
    url = client.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def fail_until_dead_lettered(client, url, times=3):
    """Receive without deleting, past maxReceiveCount: SQS moves the messages to the DLQ."""
    for _ in range(times):
        client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
