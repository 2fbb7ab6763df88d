"""Exports BullMQ job counts per queue for Prometheus (and through the adapter, for the HPAs)."""
