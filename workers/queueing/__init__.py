"""BullMQ job conventions shared by the gateway (producer) and the workers (consumers)."""
