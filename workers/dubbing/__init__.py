"""Dubbing: one job per media file that flows through STT -> MT -> TTS per segment -> lip-sync, as BullMQ flows."""
