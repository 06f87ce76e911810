"""One-line presets for what stock OpenTelemetry instrumentations emit (read from their source).

Attribute names are the current semantic conventions; engine.ALIASES also reads the older names
the instrumentations still write (pika: messaging.conversation_id, requests by default: http.url,
http.status_code), so one preset serves old and new releases."""

from __future__ import annotations

from typing import Any

# 4xx a client must not retry unchanged: every 4xx but 408 (timeout), 425 (too early), 429 (slow down).
NON_RETRYABLE_4XX = [c for c in range(400, 452) if c not in (408, 425, 429)]

PRESETS: dict[str, dict[str, Any]] = {
    # requests, httpx, aiohttp-client, urllib3, Node http/undici: a CLIENT span per request with the
    # method, the URL and the response status; a 2xx is the confirm, a non-retryable 4xx the fail.
    "http-client": {
        "when": {"kind": "client", "attributes": {"http.request.method": "*"}},
        "stage": "attempt",
        "confirm_when": {"attributes": {"http.response.status_code": "2??"}},
        "fail_when": {"attributes": {"http.response.status_code": NON_RETRYABLE_4XX}},
    },
    # pika, aio-pika, Node amqplib: a PRODUCER span on publish with the message properties
    # (correlation_id -> messaging.conversation_id, message_id -> messaging.message_id).
    "rabbitmq-publish": {
        "when": {"kind": "producer", "attributes": {"messaging.system": "rabbitmq"}},
        "stage": "source",
        "correlation": [{"attribute": "messaging.message.conversation_id"}],
    },
    # The CONSUMER span of a delivery: a child of the publish span (context from the headers).
    "rabbitmq-consume": {
        "when": {"kind": "consumer", "attributes": {"messaging.system": "rabbitmq"}},
        "stage": "none",
        "correlation": [{"attribute": "messaging.message.conversation_id"}],
    },
    # botocore (CLIENT "SQS.SendMessage", messaging.message.id = the MessageId) and boto3sqs
    # (PRODUCER "<queue> send"): no business ID, stitched through the trace or the message ID.
    "sqs-send": {
        "when": {
            "kind": ["client", "producer"],
            "name": ["SQS.SendMessage*", "* send"],
            "attributes": {"messaging.system": ["aws.sqs", "aws_sqs", "AmazonSQS"]},
        },
        "stage": "source",
    },
    # botocore "SQS.ReceiveMessage" (messaging.message.id of the first message), boto3sqs
    # "<queue> receive" / "<queue> process" (linked to the send span).
    "sqs-receive": {
        "when": {
            "kind": ["client", "consumer"],
            "name": ["SQS.ReceiveMessage", "* receive", "* process"],
            "attributes": {"messaging.system": ["aws.sqs", "aws_sqs", "AmazonSQS"]},
        },
        "stage": "none",
    },
    # azure-servicebus: PRODUCER "ServiceBus.message" per message, CLIENT "ServiceBus.send".
    "servicebus-send": {
        "when": {
            "name": ["ServiceBus.message", "ServiceBus.send", "send *"],
            "attributes": {"messaging.system": "servicebus"},
        },
        "stage": "source",
    },
    "servicebus-receive": {
        "when": {"name": ["ServiceBus.receive*", "receive *"], "attributes": {"messaging.system": "servicebus"}},
        "stage": "none",
    },
    # azure-servicebus settles as CLIENT "ServiceBus.<complete|abandon|dead_letter|defer>" linked
    # to the message spans; newer conventions name the disposition in an attribute.
    "servicebus-settle": {
        "when": {
            "name": [
                "ServiceBus.complete",
                "ServiceBus.abandon",
                "ServiceBus.dead_letter",
                "ServiceBus.defer",
                "settle *",
            ],
            "attributes": {"messaging.system": "servicebus"},
        },
        "stage": "none",
        "fail_when": [
            {"name": "ServiceBus.dead_letter"},
            {"attributes": {"messaging.servicebus.disposition_status": ["dead_letter", "DEAD_LETTER", "deadletter"]}},
        ],
    },
}
