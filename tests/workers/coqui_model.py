"""Build a small Coqui VITS model with random weights in a model directory, the way a trained one ships.

Nothing is downloaded: the model is made from its config. Used by the coqui tests and bench/tts_rtf.py.
"""

from __future__ import annotations

from pathlib import Path

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


XTTS_SAMPLE_RATE = 24000  # XTTS's HiFi-GAN decoder writes 24 kHz (XttsAudioConfig.output_sample_rate)


def build_random_xtts(model_dir: Path, seed: int = 0) -> Path:
    """A small XTTS with random weights, saved as a trained XTTS ships: config.json ("model": "xtts"), model.pth
    ({"model": state dict, "config": ...}) and vocab.json (the BPE tokenizer; here the one coqui-tts ships for
    Tortoise, TTS/tts/utils/assets/tortoise/tokenizer.json). No speakers_xtts.pth (no built-in speakers) and no
    DVAE (inference does not use it; Xtts.load_checkpoint drops its keys); the mel statistics are the model's
    `mel_stats` buffer in the state dict.

    The GPT is tiny (2 layers, 64 channels) and may generate at most 8 audio codes (gpt_max_audio_tokens), so a
    sentence is about 0.2 s of audio. The HiFi-GAN decoder and its ResNet speaker encoder have fixed sizes in
    coqui-tts (XttsArgs sets only their input widths), so they are full size: model.pth is about 90 MB. RANDOM
    WEIGHTS: the audio is noise. RANDOM_WEIGHTS.txt marks the directory (the worker names it '<dir> (random
    weights)')."""
    import shutil

    import torch
    import TTS
    from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig
    from TTS.tts.configs.xtts_config import XttsConfig as CoquiXttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    model_dir.mkdir(parents=True, exist_ok=True)
    vocab = model_dir / "vocab.json"
    shutil.copyfile(Path(TTS.__file__).parent / "tts/utils/assets/tortoise/tokenizer.json", vocab)
    torch.manual_seed(seed)
    args = XttsArgs(gpt_layers=2, gpt_n_model_channels=64, gpt_n_heads=2, gpt_max_audio_tokens=8,
                    gpt_use_perceiver_resampler=True, decoder_input_dim=64)
    config = CoquiXttsConfig(model_args=args, audio=XttsAudioConfig())
    model = Xtts(config)
    # Xtts sizes its text embedding from the tokenizer it has: give it the vocabulary, as load_checkpoint will.
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab))
    model.init_models()
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, model_dir / "model.pth")
    config.save_json(str(model_dir / "config.json"))
    (model_dir / "RANDOM_WEIGHTS.txt").write_text(
        "This XTTS model has random weights (tests/workers/coqui_model.py): it speaks noise.\n")
    return model_dir
