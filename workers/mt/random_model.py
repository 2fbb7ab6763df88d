"""Build a small Marian translation model with random weights, the way a trained one ships, and convert it with
CTranslate2's own converter into what the mt worker loads.

Nothing is downloaded: the SentencePiece models are trained here on a few sentences, the vocabulary is theirs,
and the transformer is made from a MarianConfig. ITS TRANSLATIONS ARE MEANINGLESS (random weights): it exists to
exercise the real tokenization, loading, batching and decoding code where no trained model can be fetched
(tests/workers/test_mt.py, bench/mt_throughput.py, and the local inventory's demo model). Needs torch and
transformers (the harness virtualenv), which the mt-worker image does not carry.

    python -m workers.mt.random_model OUT_DIR [--d-model 64 --layers 2 --seed 0]
"""

from __future__ import annotations

import io
import json
from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is a test of the translation service",
    "please call me back tomorrow morning",
    "the train leaves at seven o'clock",
    "der schnelle braune fuchs springt ueber den faulen hund",
    "guten tag, dies ist ein test des uebersetzungsdienstes",
    "bitte ruf mich morgen frueh zurueck",
    "der zug faehrt um sieben uhr ab",
]
TOKENIZER_FILES = ["source.spm", "target.spm", "vocab.json", "tokenizer_config.json"]


def _train_spm(path: Path, vocab_size: int) -> None:
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=out, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, eos_id=0, unk_id=1, bos_id=-1, pad_id=-1, eos_piece="</s>", unk_piece="<unk>",
        hard_vocab_limit=False, minloglevel=2,
    )
    path.write_bytes(out.getvalue())


def build_random_marian(hf_dir: Path, targets: tuple[str, ...] = ("de",), seed: int = 0, d_model: int = 64,
                        layers: int = 2, heads: int = 4, ffn_dim: int | None = None,
                        vocab_size: int | None = None) -> Path:
    """A Marian checkpoint (config.json, model.safetensors, source/target.spm, vocab.json,
    tokenizer_config.json) in hf_dir; several targets make it multi-target (``>>xx<<`` tokens).
    ``vocab_size`` pads the vocabulary with unused pieces to that size (opus-mt models have about 58k, which
    is what the output projection costs per decoded token)."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel

    hf_dir.mkdir(parents=True, exist_ok=True)
    _train_spm(hf_dir / "source.spm", 80)
    _train_spm(hf_dir / "target.spm", 80)
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    if len(targets) > 1:
        for t in targets:
            vocab.setdefault(f">>{t}<<", len(vocab))
    for side in ("source", "target"):
        sp = spm.SentencePieceProcessor(model_file=str(hf_dir / f"{side}.spm"))
        for i in range(sp.get_piece_size()):
            vocab.setdefault(sp.id_to_piece(i), len(vocab))
    while vocab_size is not None and len(vocab) < vocab_size - 1:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    vocab.setdefault("<pad>", len(vocab))
    (hf_dir / "vocab.json").write_text(json.dumps(vocab))
    # A multi-target checkpoint names no single target language: the worker is told them (MT_TARGET_LANGUAGES).
    names = {"source_lang": "en", **({"target_lang": targets[0]} if len(targets) == 1 else {})}
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({**names, "model_max_length": 512}))
    config = MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=d_model, encoder_layers=layers,
        decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=ffn_dim or d_model * 2, decoder_ffn_dim=ffn_dim or d_model * 2,
        max_position_embeddings=512, pad_token_id=vocab["<pad>"], eos_token_id=0,
        # init_std 0.05: at 0.02 a small random model gives one output for every input, at 0.2 it saturates.
        decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0, init_std=0.05,
        share_encoder_decoder_embeddings=True,
    )
    torch.manual_seed(seed)
    MarianMTModel(config).eval().save_pretrained(hf_dir)
    return hf_dir


def convert(hf_dir: Path, ct2_dir: Path, quantization: str | None = None) -> Path:
    """CTranslate2's TransformersConverter, as ct2-transformers-converter --copy_files runs it."""
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(hf_dir), copy_files=TOKENIZER_FILES).convert(
        str(ct2_dir), quantization=quantization, force=True)
    return ct2_dir


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shutil
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m workers.mt.random_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the CTranslate2 model directory to write (MT_MODEL)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantization", default=None, help="CTranslate2 quantization (int8, float16, ...)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        hf = build_random_marian(Path(tmp) / "hf", seed=args.seed, d_model=args.d_model, layers=args.layers)
        staging = args.out.with_name(args.out.name + ".partial")
        convert(hf, staging, args.quantization)
        (staging / "RANDOM_WEIGHTS.txt").write_text(
            "This Marian model has random weights (workers/mt/random_model.py): its translations are meaningless.\n")
        if args.out.exists():
            shutil.rmtree(args.out)
        staging.rename(args.out)  # whole or absent: a reader never sees half a model
    for f in args.out.iterdir():
        f.chmod(0o644)
    args.out.chmod(0o755)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
