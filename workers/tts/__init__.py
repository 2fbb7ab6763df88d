"""Text-to-speech backends (piper, coqui) behind one interface."""
