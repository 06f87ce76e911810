"""Test doubles for the collectors' fault tests and the Service Bus management endpoint."""
