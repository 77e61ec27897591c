"""A private Kafka and/or MinIO for the resilience tests (the class lives in bench/, which uses it too)."""

from bench._pipeline_stack import PrivateStack

__all__ = ["PrivateStack"]
