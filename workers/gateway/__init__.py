"""The HTTP gateway: accepts STT and TTS jobs, queues them in BullMQ, serves their status and results."""
