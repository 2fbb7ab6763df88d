"""Build a small Coqui VITS model with random weights in a model directory, the way a trained one ships.

Nothing is downloaded: the model is made from its config. Used by the coqui tests and bench/tts_rtf.py. The XTTS
builder lives in workers/xtts/random_model.py.
"""

from __future__ import annotations

from pathlib import Path

# The XTTS builder is the worker's own (the local demo deploys it too), re-exported for the coqui tests.
from workers.xtts.random_model import XTTS_SAMPLE_RATE, build_random_xtts  # noqa: F401

SAMPLE_RATE = 16000


def build_random_vits(model_dir: Path, seed: int = 0) -> Path:
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    torch.manual_seed(seed)
    args = VitsArgs(
        hidden_channels=64, hidden_channels_ffn_text_encoder=128, num_layers_text_encoder=2,
        num_heads_text_encoder=2, num_layers_posterior_encoder=4, num_layers_flow=2,
        upsample_initial_channel_decoder=64, resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]], init_discriminator=False,
    )
    config = VitsConfig(
        model_args=args,
        audio=BaseAudioConfig(sample_rate=SAMPLE_RATE),
        use_phonemes=False,  # characters in, so no phonemizer (espeak) is needed
        text_cleaner="english_cleaners",
        characters=CharactersConfig(
            characters_class="TTS.tts.models.vits.VitsCharacters", pad="<PAD>", eos="<EOS>", bos="<BOS>",
            blank="<BLNK>", characters="abcdefghijklmnopqrstuvwxyz ", punctuations="!'(),-.:;? ",
            phonemes=None,
        ),
    )
    model = Vits(config)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, model_dir / "model.pth")
    config.save_json(str(model_dir / "config.json"))
    return model_dir
