"""Training M2UGen: the paper's three stages (with the modality gates trained) and personal fine-tunes.

    from m2ugen.train import TrainConfig, load_model, train
    model, base = load_model(preset="tiny", seed=0)             # or load_model(weights="weights.json")
    summary = train(model, TrainConfig.preset("tiny-stage3"), "Datasets/", "runs/s3", base_spec=base)

    from m2ugen.train.finetune import FinetuneConfig, finetune, apply_adapter
    finetune(model, "my_clips/", "adapters/mine", FinetuneConfig(steps=100))
    apply_adapter(served_model, "adapters/mine")                 # then select_adapter(model, name | None)

Modules: ``config`` (TrainConfig and presets), ``data`` (dataset readers, validation, collate),
``features`` (frozen-encoder feature cache), ``stages`` (trainable tensors, losses), ``trainer`` (the
accelerate loop), ``checkpoints`` (servable weights, resumable state), ``finetune`` (PEFT LoRA),
``synthetic`` (tiny datasets in the published layouts, for tests and benchmarks). docs/training.md.
"""

from m2ugen.train.config import STAGE_DATASETS, TrainConfig


def __getattr__(name: str):
    # torch and accelerate are imported on first use
    if name == "train":
        from m2ugen.train.trainer import train

        return train
    if name == "load_model":
        from m2ugen.train.run import load_model

        return load_model
    raise AttributeError(f"module 'm2ugen.train' has no attribute {name!r}")


__all__ = ["TrainConfig", "STAGE_DATASETS", "train", "load_model"]
