"""Broker collectors: queue and dead-letter-queue depth from SQS, Service Bus and RabbitMQ.

Collector types are plug-ins registered in the `syncwatch.collectors` entry-point group.
"""
