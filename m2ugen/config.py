"""The one configuration dataclass of the M2UGen model, and its named presets.

Field names follow the official implementation (``ModelArgs`` of ``M2UGen/llama/llama.py`` and the
argparse options of ``M2UGen/llama/m2ugen.py``) where it has one. Sub-models (MERT, ViT, ViViT,
MusicGen / AudioLDM2) come either from a local directory / Hugging Face cache entry (``*_path``) or,
when the path is ``None``, are built with random weights from the ``*_config`` dicts (the tiny preset).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

AUDIO_TOKENS = [f"[AUD{i}]" for i in range(8)]
GATE_INITS = ("zero", "random")

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


@dataclass
class M2UGenConfig:
    name: str = "musicgen-medium"

    # --- LLaMA-2 (Meta layout, interleaved RoPE, no GQA) ---
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    vocab_size: int = 32008  # 32000 + [AUD0]..[AUD7]
    multiple_of: int = 256
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 1024
    w_bias: bool = True  # bias tuning on wq, wo, w1, w2, w3
    w_lora: bool = True
    lora_rank: int = 16

    # --- [AUD] tokens and modality injection ---
    num_gen_audio_tokens: int = 8
    # Layers per modality: 6 -> prefix_query [18, dim], audio/image/video into the top 18 layers.
    # The legacy layout (prefix_query [20, dim], summed features into the top 20 layers) is chosen
    # when a checkpoint's prefix_query has 20 rows (see legacy_prefix).
    query_layer: int = 6
    legacy_prefix: bool = False
    legacy_prefix_layers: int = 20

    # --- understanding bridges (Conv1d aggregation -> L2 norm -> Linear -> 3 RMSNorm SwiGLU blocks) ---
    mert_layers: int = 25  # hidden states of MERT-v1-330M (embeddings + 24 layers)
    mert_dim: int = 1024
    vit_tokens: int = 197
    vit_dim: int = 768
    vivit_tokens: int = 3137
    vivit_dim: int = 768
    feature_scaler: int = 1
    bridge_norm_eps: float = 1e-6

    # --- output projector (nn.Transformer named ``tfm``) ---
    projector_dim: int = 512
    projector_heads: int = 4
    projector_layers: int = 4
    projector_ffn: int = 2048
    num_output_tokens: int = 128  # MusicGen: 128 x 768 (T5 space); AudioLDM2: 1 x 137216
    output_dim: int = 768

    # --- music decoder ---
    # "musicgen" (text-to-music; stereo when its checkpoint has audio_channels=2) |
    # "musicgen-melody" (text + chroma) | "audioldm2"
    music_decoder: str = "musicgen"
    continue_prompt_s: float = 10.0  # mode="continue": at most the last N seconds of the source prompt MusicGen

    # --- where the weights come from (local dir or a Hugging Face repo id in the offline cache) ---
    llama_dir: str | None = None  # Meta format (consolidated.*.pth + params.json) or HF format
    tokenizer_path: str | None = None  # dir with tokenizer.model; None = tiny tokenizer from assets/
    mert_path: str | None = "m-a-p/MERT-v1-330M"
    vit_path: str | None = "google/vit-base-patch16-224"
    vivit_path: str | None = "google/vivit-b-16x2"
    decoder_path: str | None = "facebook/musicgen-medium"

    # --- random sub-models (HF config kwargs), used where the *_path is None ---
    mert_config: dict[str, Any] | None = None
    vit_config: dict[str, Any] | None = None
    vivit_config: dict[str, Any] | None = None
    decoder_config: dict[str, Any] | None = None

    # --- input processing ---
    audio_sample_rate: int = 24000  # MERT input rate
    mert_window_s: float = 60.0
    mert_windows: str = "all"  # "all": average over every 60 s window; "reference": first 60 s only
    video_frames: int = 32
    video_sampling: str = "uniform"  # "uniform" (deterministic, whole clip) | "reference" (random 32-frame window)
    image_size: int = 224
    max_audio_s: float = 600.0

    # --- generation defaults (front-ends of the official code) ---
    temperature: float = 0.6
    top_p: float = 0.8
    max_new_tokens: int = 512
    guidance_scale: float = 3.5
    musicgen_tokens_per_s: float = 51.2  # official int(256 / 5 * seconds)
    embedding_scale: float = 0.1  # projector output / 10 conditions the decoder ("embedding" mode)
    audioldm2_steps: int = 200
    audioldm2_waveforms: int = 3

    # --- initialisation of random weights (from_config) ---
    # "zero": the official init (tanh(0) = 0: audio/image/video and prefix_query cannot reach the text);
    # "random": seeded N(0, 1) gates, so every input path of a random model changes its output
    gate_init: str = "zero"

    # --- numerics ---
    dtype: str = "float32"  # parameter dtype of the LLaMA ("float16"/"bfloat16" on GPU)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        # LLaMA: 2/3 * 4 * dim rounded up to a multiple of ``multiple_of`` (11008 for 7B)
        hidden = int(2 * 4 * self.dim / 3)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    @property
    def n_prefix(self) -> int:
        """Rows of ``prefix_query``: 3 * query_layer (18), or 20 in the legacy layout."""
        return self.legacy_prefix_layers if self.legacy_prefix else 3 * self.query_layer

    @property
    def is_tiny(self) -> bool:
        return self.name.startswith("tiny")

    def replace(self, **changes: Any) -> "M2UGenConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> "M2UGenConfig":
        try:
            return _PRESETS[name]()
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}") from None


def _musicgen_melody() -> M2UGenConfig:
    """M2UGen's LLM and projector (MusicGen-medium variant) with the MusicGen-Melody 1.5B decoder (text + chroma).
    The decoder's T5 is t5-base like musicgen-medium's, so the projector's 768-dim output fits it too."""
    return M2UGenConfig(name="musicgen-melody", music_decoder="musicgen-melody", decoder_path="facebook/musicgen-melody")


def _musicgen_stereo_medium() -> M2UGenConfig:
    """The MusicGen-medium variant with the stereo medium decoder (8 codebooks: 4 per channel, interleaved)."""
    return M2UGenConfig(name="musicgen-stereo-medium", decoder_path="facebook/musicgen-stereo-medium")


def _musicgen_stereo_melody() -> M2UGenConfig:
    """The MusicGen-medium variant with the stereo melody decoder (chroma + text, two channels)."""
    return M2UGenConfig(name="musicgen-stereo-melody", music_decoder="musicgen-melody",
                        decoder_path="facebook/musicgen-stereo-melody")


def _musicgen_small() -> M2UGenConfig:
    return M2UGenConfig(name="musicgen-small", decoder_path="facebook/musicgen-small")


def _musicgen_medium() -> M2UGenConfig:
    return M2UGenConfig(name="musicgen-medium", decoder_path="facebook/musicgen-medium")


def _audioldm2() -> M2UGenConfig:
    # target = flatten(T5 [128, 1024]) ++ flatten(GPT-2 [8, 768]) = 137216 values, one output token
    return M2UGenConfig(
        name="audioldm2",
        music_decoder="audioldm2",
        decoder_path="cvssp/audioldm2-music",
        num_output_tokens=1,
        output_dim=128 * 1024 + 8 * 768,
    )


def _tiny() -> M2UGenConfig:
    """Every component tiny and random: the whole chat -> text/audio path runs on CPU in seconds."""
    return M2UGenConfig(
        name="tiny",
        dim=64,
        n_layers=4,
        n_heads=4,
        vocab_size=0,  # filled from the tiny tokenizer (+ 8 [AUD] tokens) when the model is built
        multiple_of=32,
        max_seq_len=512,
        lora_rank=4,
        query_layer=1,  # 3 injected layers: audio -> layer 1, image -> layer 2, video -> layer 3
        legacy_prefix_layers=3,
        mert_layers=3,  # 2 hidden layers + embeddings
        mert_dim=32,
        vit_tokens=17,  # (32 / 8)^2 + CLS
        vit_dim=32,
        vivit_tokens=33,  # (4 / 2) * (32 / 8)^2 + CLS
        vivit_dim=32,
        projector_dim=32,
        projector_heads=2,
        projector_layers=1,
        projector_ffn=64,
        num_output_tokens=8,
        output_dim=32,  # tiny T5 d_model
        tokenizer_path=None,
        mert_path=None,
        vit_path=None,
        vivit_path=None,
        decoder_path=None,
        mert_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=[16] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
            conv_bias=False, feat_extract_norm="group", feat_proj_layer_norm=True, do_stable_layer_norm=True,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
            # N(0, 0.1) linears instead of 0.02: hidden states of std ~0.4 (not 0.06, drowned by the
            # bridge's aggregation bias), so that different music reaches the LLM differently
            initializer_range=0.1,
        ),
        vit_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64),
        vivit_config=dict(image_size=32, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=64),
        decoder_config=dict(
            text_encoder=dict(vocab_size=100, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16),
            # target_bandwidths: encode() (mode="continue") uses the first: 1.2 kbps = 4 codebooks of 64 entries
            # (6 bits) at 50 Hz, the decoder's 4, as 2.2 kbps does for the real 2048-entry codebooks; the
            # quantizer and its random weights do not depend on it
            audio_encoder=dict(sampling_rate=32000, audio_channels=1, num_filters=4, hidden_size=16, codebook_size=64,
                               codebook_dim=16, upsampling_ratios=[8, 5, 4, 4], num_residual_layers=1, num_lstm_layers=1,
                               target_bandwidths=[1.2, 2.2], kernel_size=3, last_kernel_size=3, residual_kernel_size=3),
            decoder=dict(vocab_size=64, max_position_embeddings=1024, num_hidden_layers=2, ffn_dim=64,
                         num_attention_heads=2, hidden_size=48, num_codebooks=4, pad_token_id=64, bos_token_id=64,
                         decoder_start_token_id=64, audio_channels=1),
        ),
        image_size=32,
        video_frames=4,
        max_new_tokens=48,
        audioldm2_steps=3,
        audioldm2_waveforms=1,
        gate_init="random",  # the tiny model's audio/image/video inputs reach its text (issue 11 §4)
    )


def _tiny_audioldm2() -> M2UGenConfig:
    """The tiny preset with a tiny random AudioLDM2 decoder (diffusers' own fast-test dimensions)."""
    return _tiny().replace(
        name="tiny-audioldm2",
        music_decoder="audioldm2",
        num_output_tokens=1,
        output_dim=4 * 32 + 8 * 16,  # T5-space [4, 32] ++ GPT-2-space [8, 16]
        decoder_config=None,  # built by m2ugen.decoders from its own tiny recipe
    )


def _tiny_melody() -> M2UGenConfig:
    """The tiny preset with a tiny random MusicGen-Melody decoder (chroma of up to 32 frames = 4.1 s)."""
    cfg = _tiny()
    dec = dict(cfg.decoder_config, chroma_length=32, num_chroma=12)
    return cfg.replace(name="tiny-melody", music_decoder="musicgen-melody", decoder_config=dec)


def _tiny_stereo() -> M2UGenConfig:
    """The tiny preset with a tiny random stereo MusicGen decoder (2 x 4 codebooks, interleaved per channel)."""
    cfg = _tiny()
    dec = dict(cfg.decoder_config, decoder=dict(cfg.decoder_config["decoder"], num_codebooks=8, audio_channels=2))
    return cfg.replace(name="tiny-stereo", decoder_config=dec)


_PRESETS = {
    "tiny": _tiny,
    "tiny-audioldm2": _tiny_audioldm2,
    "tiny-melody": _tiny_melody,
    "tiny-stereo": _tiny_stereo,
    "musicgen-small": _musicgen_small,
    "musicgen-medium": _musicgen_medium,
    "musicgen-melody": _musicgen_melody,
    "musicgen-stereo-medium": _musicgen_stereo_medium,
    "musicgen-stereo-melody": _musicgen_stereo_melody,
    "audioldm2": _audioldm2,
}
