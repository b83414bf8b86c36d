"""M2UGen: music understanding and generation with a LLaMA-2 core (Liu et al., arXiv 2311.11255).

A re-implementation of the official model that loads its checkpoints: MERT / ViT / ViViT encoders,
understanding bridges, LLaMA-2 with LoRA, bias tuning and gated prefix adapters, ``[AUD0..7]`` output
tokens, an output projector and a MusicGen or AudioLDM2 decoder. Decoding uses a KV cache.

    from m2ugen import M2UGen, M2UGenConfig
    model = M2UGen.from_config(M2UGenConfig.preset("tiny"))   # random, tiny, CPU, no downloads
    reply = model.chat("Generate a calm piano melody", want_audio=True, duration_s=2.0)

See docs/model-api.md for the full public API.
"""

from m2ugen.config import PROMPT_TEMPLATE, M2UGenConfig


def __getattr__(name: str):
    # The model (and torch with it) is imported on first use, so that light modules such as
    # m2ugen.paths cost the CLI nothing at start-up.
    if name in ("M2UGen", "Event", "Reply"):
        from m2ugen import model

        return getattr(model, name)
    raise AttributeError(f"module 'm2ugen' has no attribute {name!r}")


__all__ = ["M2UGen", "M2UGenConfig", "Reply", "Event", "PROMPT_TEMPLATE"]
