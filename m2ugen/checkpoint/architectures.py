"""What the checkpoints' models look like: the sub-models' known architectures and telling a preset
(and the prefix layout) from tensor shapes.

``KNOWN_ARCHITECTURES`` holds the Hugging Face config kwargs of the Hub repos the presets name, as
published in their ``config.json``: they build the full-size sub-models with no file access (on
the meta device to check a checkpoint's keys, or to hold the weights an official checkpoint carries).
"""

from __future__ import annotations

import json
from typing import Any

from m2ugen.config import M2UGenConfig

MERT_V1_330M = dict(  # m-a-p/MERT-v1-330M as a plain transformers HubertModel (dependencies.md §5)
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_bias=False, feat_extract_norm="group", feat_proj_layer_norm=True, do_stable_layer_norm=True,
    num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, layer_norm_eps=1e-5,
    hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
)
VIT_BASE_16_224 = dict(  # google/vit-base-patch16-224: 14 x 14 patches + CLS = 197 tokens of 768
    image_size=224, patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12,
    num_attention_heads=12, intermediate_size=3072, layer_norm_eps=1e-12,
)
VIVIT_B_16X2 = dict(  # google/vivit-b-16x2(-kinetics400): 16 x 14 x 14 tubelets + CLS = 3137 tokens
    image_size=224, num_frames=32, tubelet_size=[2, 16, 16], num_channels=3, hidden_size=768,
    num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu_fast",
    layer_norm_eps=1e-6, qkv_bias=True,
)
T5_BASE_ENCODER = dict(  # MusicGen's text encoder (t5-base)
    vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
    relative_attention_num_buckets=32, feed_forward_proj="relu",
)
ENCODEC_32KHZ = dict(  # facebook/encodec_32khz as configured inside facebook/musicgen-*
    sampling_rate=32000, audio_channels=1, num_filters=64, hidden_size=128, codebook_size=2048,
    codebook_dim=128, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_residual_layers=1,
    num_lstm_layers=2, kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_growth_rate=2,
    use_causal_conv=False, use_conv_shortcut=False, normalize=False, norm_type="weight_norm",
    pad_mode="reflect", compress=2, trim_right_ratio=1.0,
)


def _musicgen_decoder(hidden: int, layers: int, heads: int) -> dict[str, Any]:
    return dict(
        vocab_size=2048, max_position_embeddings=2048, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, ffn_dim=4 * hidden, num_codebooks=4, audio_channels=1,
        pad_token_id=2048, bos_token_id=2048, decoder_start_token_id=2048,
    )


MUSICGEN_SMALL = dict(text_encoder=T5_BASE_ENCODER, audio_encoder=ENCODEC_32KHZ,
                      decoder=_musicgen_decoder(1024, 24, 16))
MUSICGEN_MEDIUM = dict(text_encoder=T5_BASE_ENCODER, audio_encoder=ENCODEC_32KHZ,
                       decoder=_musicgen_decoder(1536, 48, 24))
# the melody and stereo checkpoints (facebook/musicgen-melody, -stereo-medium, -stereo-melody config.json):
# the medium decoder; stereo: 2 x 4 codebooks interleaved left/right; melody: chroma prefix of 235 frames
MUSICGEN_MELODY = dict(MUSICGEN_MEDIUM, chroma_length=235, num_chroma=12)
MUSICGEN_STEREO_MEDIUM = dict(MUSICGEN_MEDIUM, decoder=dict(MUSICGEN_MEDIUM["decoder"], num_codebooks=8, audio_channels=2))
MUSICGEN_STEREO_MELODY = dict(MUSICGEN_MELODY, decoder=MUSICGEN_STEREO_MEDIUM["decoder"])

KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "m-a-p/MERT-v1-330M": MERT_V1_330M,
    "google/vit-base-patch16-224": VIT_BASE_16_224,
    "google/vivit-b-16x2": VIVIT_B_16X2,
    "google/vivit-b-16x2-kinetics400": VIVIT_B_16X2,
    "facebook/musicgen-small": MUSICGEN_SMALL,
    "facebook/musicgen-medium": MUSICGEN_MEDIUM,
    "facebook/musicgen-melody": MUSICGEN_MELODY,
    "facebook/musicgen-stereo-medium": MUSICGEN_STEREO_MEDIUM,
    "facebook/musicgen-stereo-melody": MUSICGEN_STEREO_MELODY,
}


def offline_config(preset: str) -> M2UGenConfig:
    """The preset with every Hub sub-model replaced by its known architecture (``*_path=None``).

    The result builds the full-size model with random sub-model weights and no file access, e.g.
    on the meta device to check a checkpoint's keys, or to load an official checkpoint that holds
    the sub-model weights itself. The AudioLDM2 pipeline keeps its ``decoder_path`` (it is no
    ``nn.Module`` and has no keys in the official checkpoint).
    """
    cfg = M2UGenConfig.preset(preset)
    changes: dict[str, Any] = {}
    for field_ in ("mert", "vit", "vivit", "decoder"):
        path = getattr(cfg, f"{field_}_path")
        if path in KNOWN_ARCHITECTURES:
            changes[f"{field_}_path"] = None
            changes[f"{field_}_config"] = json.loads(json.dumps(KNOWN_ARCHITECTURES[path]))  # deep copy
    return cfg.replace(**changes)


def detect_prefix_layout(cfg: M2UGenConfig, rows: int) -> bool | None:
    """True for the legacy layout, False for per-modality, None if ``rows`` fits neither."""
    if rows == 3 * cfg.query_layer:
        return False
    if rows == cfg.legacy_prefix_layers:
        return True
    return None


def guess_preset(shapes: dict[str, Any]) -> str | None:
    """Preset name from tensor shapes of an official-named state dict (None if unknown)."""
    def shape(k):
        s = shapes.get(k)
        return tuple(s.shape) if hasattr(s, "shape") else (tuple(s) if s is not None else None)

    proj = shape("output_projector.model.weight")
    emb = shape("llama.tok_embeddings.weight")
    if proj is None or emb is None:
        return None
    if emb[1] == 4096:
        if proj[0] == 128 * 1024 + 8 * 768:
            return "audioldm2"
        if proj[0] == 768:
            enc = shape("generation_model.enc_to_dec_proj.weight")
            if enc == (1024, 768):
                return "musicgen-small"
            if enc == (1536, 768):
                return "musicgen-medium"
            return None  # small and medium differ only in the decoder
    for name in ("tiny", "tiny-audioldm2"):
        c = M2UGenConfig.preset(name)
        if emb[1] == c.dim and proj[0] == c.output_dim:
            return name
    return None
