"""What SANA-Video asks of the rest of the pack beyond its transformer: telling a video config from an image one, its
latents' shape, and the prompting its reference pipeline does (the video instruction, the motion score, the
default negative prompt)."""

from __future__ import annotations

import torch

from .errors import SanaError
from .video_transformer import SanaVideoConfig

# The complex human instruction of diffusers' SanaVideoPipeline (the image models' asks for image detail instead).
VIDEO_CHI = [
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for video "
    "generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, motion, and temporal "
    "relationships to create vivid and dynamic scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat slowly settling into a curled position, "
    "peacefully falling asleep on a warm sunny windowsill, with gentle sunlight filtering through surrounding pots of "
    "blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps gradually lighting up, a diverse crowd of people in colorful clothing walking past, and a double-decker bus "
    "smoothly passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional commentary "
    "or evaluations:",
    "User Prompt: ",
]

# The negative prompt of the published SANA-Video examples.
DEFAULT_NEGATIVE = ("A chaotic sequence with misshapen, deformed limbs in heavy motion blur, sudden disappearance, jump "
                    "cuts, jerky movements, rapid shot changes, frames out of sync, inconsistent character shapes, "
                    "temporal artifacts, jitter, and ghosting effects, creating a disorienting visual experience.")

def with_motion_score(prompt: str, score: int | None) -> str:
    """The prompt with the published examples' " motion score: N." appended (None or a negative score: as is)."""
    return prompt if score is None or score < 0 else f"{prompt} motion score: {score}."


def is_video(cfg) -> bool:
    return isinstance(cfg, SanaVideoConfig)


def check_video_latent(latent: torch.Tensor, cfg: SanaVideoConfig, what: str = "latent") -> None:
    """A SanaError unless ``latent`` is a Wan 2.1 video latent (B, 16, F, H/8, W/8) this model's patches tile."""
    shape = tuple(latent.shape)
    if latent.ndim != 5 or shape[1] != cfg.in_channels:
        kind = "an image latent" if latent.ndim == 4 else f"a {latent.ndim}-D latent"
        raise SanaError(f"{what} has shape {shape}: {kind}; a SANA-Video model samples Wan 2.1 video latents "
                        f"[B, {cfg.in_channels}, frames, H/8, W/8] (Sana Empty Video Latent, EmptyHunyuanLatentVideo "
                        "or Sana Image to Video)")
    _, ph, pw = cfg.patch_size
    if shape[3] % ph or shape[4] % pw:
        raise SanaError(f"{what} is {shape[4]}x{shape[3]} latent cells; SANA-Video patches need multiples of "
                        f"{pw}x{ph} (a video size in multiples of 16 pixels)")
