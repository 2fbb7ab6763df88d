"""Lip-sync (the ``lipsync`` service): a Wav2Lip-style model re-renders the face region of a video to dubbed audio."""
