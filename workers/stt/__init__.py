"""Speech-to-text on faster-whisper."""
