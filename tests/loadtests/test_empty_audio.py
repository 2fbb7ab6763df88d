"""The `empty-audio` scenario (the live check that result validation catches empty TTS results) holds only if
the bundled piper voice really speaks its texts as 0 s of audio and the gateway accepts them; both checked here
offline, with the real voice and the gateway's own request model."""

from __future__ import annotations

from loadtests.scenario import load_scenario


def test_empty_audio_texts_yield_zero_seconds_with_the_bundled_voice():
    from workers.tts.piper_backend import PiperBackend

    scenario = load_scenario("empty-audio")
    assert scenario.services == ("tts",) and scenario.load.texts
    backend = PiperBackend(None, "cpu")
    backend.load()
    for text in scenario.load.texts:
        assert text.strip(), "the gateway refuses blank text (empty_text); the scenario needs accepted jobs"
        assert len(backend.synthesize(text, "default").samples) == 0, text
    # A real sentence from the default mix does give audio (the voice works).
    assert len(backend.synthesize("Thank you for calling.", "default").samples) > 0
