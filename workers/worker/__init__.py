"""The model worker process: BullMQ consumer, batching, metrics, health and graceful shutdown."""
