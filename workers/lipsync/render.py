"""Re-render the face region of each output frame from the audio around it (Wav2Lip's inference loop).

The output has one frame per 1/fps of *audio*: a video shorter than the audio is played forwards and backwards
(no jump at the loop), a longer one is cut. Per frame: the face box's crop is resized to the model's square, its
lower half masked and stacked with the unmasked crop; the mel window starts at the frame's time; the model's face
is resized back and pasted. Everything outside the box is the source frame, untouched.
"""

from __future__ import annotations

import numpy as np

from workers.lipsync.config import LipsyncConfig
from workers.lipsync.media import MEL_FPS, SAMPLE_RATE, Video, mel_spectrogram


def source_index(i: int, n: int) -> int:
    """Frame i of the output -> a frame of an n-frame source, ping-pong."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    k = i % period
    return k if k < n else period - k


def pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height))
    return x0, y0, max(x0 + 2, x1), max(y0 + 2, y1)


class LipSyncer:
    def __init__(self, config: LipsyncConfig) -> None:
        self.config = config
        self.model = None

    def load(self) -> None:
        import torch

        from workers.lipsync.model import load

        if self.config.cpu_threads:
            torch.set_num_threads(self.config.cpu_threads)
        self.model = load(self.config.model, self.config.device)

    def render(self, video: Video, audio: np.ndarray, box: tuple[float, float, float, float]) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        assert self.model is not None, "load() first"
        cfg = self.model.config
        fps = video.fps
        n_out = max(1, round(audio.size / SAMPLE_RATE * fps))
        mel = mel_spectrogram(audio)
        x0, y0, x1, y1 = pixel_box(box, video.width, video.height)
        size = cfg.face_size
        out: list[np.ndarray] = []
        for start in range(0, n_out, self.config.batch_frames):
            idx = list(range(start, min(n_out, start + self.config.batch_frames)))
            src = [video.frames[source_index(i, len(video.frames))] for i in idx]
            crops = torch.from_numpy(np.stack([f[y0:y1, x0:x1] for f in src])).permute(0, 3, 1, 2).float() / 255
            faces = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False)
            masked = faces.clone()
            masked[:, :, size // 2:] = 0
            windows = []
            for i in idx:
                m0 = int(MEL_FPS * i / fps)
                w = mel[:, m0:m0 + cfg.mel_window]
                if w.shape[1] < cfg.mel_window:  # the last frames: pad with the edge
                    edge = w[:, -1:] if w.shape[1] else np.full((mel.shape[0], 1), -4.0, np.float32)
                    w = np.concatenate([w, np.repeat(edge, cfg.mel_window - w.shape[1], 1)], 1)
                windows.append(w)
            mels = torch.from_numpy(np.stack(windows))[:, None]
            with torch.inference_mode():
                pred = self.model(torch.cat([masked, faces], 1).to(self.config.device), mels.to(self.config.device))
            back = F.interpolate(pred.cpu(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
            patches = (back.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            for f, patch in zip(src, patches, strict=True):
                frame = f.copy()
                frame[y0:y1, x0:x1] = patch
                out.append(frame)
        return out
