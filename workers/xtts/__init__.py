"""XTTS voice cloning (the ``xtts`` service): the TTS engine on the Coqui backend, pinned to an XTTS model."""
