"""A Wav2Lip-style generator (Prajwal et al., "A Lip Sync Expert Is All You Need", 2020), in the shape of the
published model, scaled by its configuration.

Input per output frame: the face crop of that frame with its lower half masked, beside an unmasked reference crop
(6 channels, ``face_size`` square), and the mel spectrogram window around the frame's time (``mel_bins`` x
``mel_window``, 0.2 s at Wav2Lip's 80 mel frames per second). A face encoder (strided convolutions, skips kept) and
an audio encoder meet at the bottleneck; a decoder with the skips re-draws the face (sigmoid, RGB). Checkpoints:
``config.json`` (the fields of Wav2LipConfig) and ``model.pt`` (a state dict). This is not the released Wav2Lip
checkpoint format; a user with trained weights maps them into this module's state dict (README).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class Wav2LipConfig:
    face_size: int = 96
    mel_bins: int = 80
    mel_window: int = 16
    channels: int = 32  # of the first face-encoder block; each of the 4 downsamplings doubles it

    @classmethod
    def from_file(cls, path: Path) -> Wav2LipConfig:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if not isinstance(raw, dict) or unknown:
            raise ValueError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(known)}")
        cfg = cls(**raw)
        if cfg.face_size % 16:
            raise ValueError(f"{path}: face_size {cfg.face_size} must be a multiple of 16 (4 downsamplings)")
        return cfg


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Wav2Lip(nn.Module):
    def __init__(self, config: Wav2LipConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        widths = [c, 2 * c, 4 * c, 8 * c, 16 * c]
        self.face_in = _block(6, widths[0])
        self.face_down = nn.ModuleList(_block(widths[i], widths[i + 1], 2) for i in range(4))
        self.audio = nn.Sequential(
            _block(1, c), _block(c, 2 * c, 2), _block(2 * c, 4 * c, 2), _block(4 * c, widths[-1], 2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.up = nn.ModuleList(
            # in: the level below and its skip, concatenated
            nn.Sequential(nn.ConvTranspose2d(2 * widths[4 - i], widths[3 - i], 4, 2, 1),
                          nn.BatchNorm2d(widths[3 - i]), nn.ReLU(inplace=True))
            for i in range(4)
        )
        self.out = nn.Sequential(_block(2 * widths[0], widths[0]), nn.Conv2d(widths[0], 3, 1), nn.Sigmoid())

    def forward(self, faces: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        """faces: (N, 6, S, S) in [0, 1]; mels: (N, 1, mel_bins, mel_window) -> (N, 3, S, S) in [0, 1]."""
        x = self.face_in(faces)
        skips = [x]
        for down in self.face_down:
            x = down(x)
            skips.append(x)
        a = self.audio(mels).expand(-1, -1, x.shape[2], x.shape[3])
        x = torch.cat([x, a], 1)
        for i, up in enumerate(self.up):
            x = up(x)
            x = torch.cat([x, skips[3 - i]], 1)
        return self.out(x)


def save(model: Wav2Lip, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(asdict(model.config)))
    torch.save(model.state_dict(), model_dir / "model.pt")
    return model_dir


def load(model_dir: Path, device: str = "cpu") -> Wav2Lip:
    config = Wav2LipConfig.from_file(model_dir / "config.json")
    model = Wav2Lip(config)
    state = torch.load(model_dir / "model.pt", map_location=device, weights_only=True)
    model.load_state_dict(state)  # strict: a checkpoint of another shape is named by torch
    return model.to(device).eval()


def build_random(model_dir: Path, seed: int = 0, **config: int) -> Path:
    """A model with random weights (meaningless output: it does not lip-sync), for tests and the local demo."""
    torch.manual_seed(seed)
    model = Wav2Lip(Wav2LipConfig(**config)).eval()
    save(model, model_dir)
    (model_dir / "RANDOM_WEIGHTS.txt").write_text(
        "This Wav2Lip-style model has random weights (workers/lipsync/model.py): it re-renders the face region "
        "with noise and does not lip-sync.\n")
    return model_dir


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workers.lipsync.model",
                                     description="Write a Wav2Lip-style model with RANDOM weights (it does not "
                                                 "lip-sync) to OUT: config.json, model.pt, RANDOM_WEIGHTS.txt.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--face-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_random(args.out, seed=args.seed, channels=args.channels, face_size=args.face_size)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
