"""The three stages end to end on the tiny model, the fixes and their reference switches."""

from __future__ import annotations

import json

import pytest
import torch

from m2ugen.train import synthetic
from m2ugen.train.config import TrainConfig
from m2ugen.train.stages import aud_positions, is_trainable, llama_hidden, param_groups, set_trainable
from m2ugen.train.trainer import train
from train_util import gates, quick, tiny, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_runs_end_to_end_and_serves(tmp_path, stage):
    from m2ugen.model import M2UGen

    synthetic.write_stage(tmp_path / "data", stage, n=2)
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = tmp_path / "run"
    summary = train(model, quick(stage, max_steps=2), tmp_path / "data", out)
    assert summary["status"] == "finished" and summary["step"] == 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    # the stage's tensors moved, frozen ones did not
    assert all(is_trainable(n, stage, True) for n in changed)
    assert "llama.layers.0.attention.wq.weight" not in changed and "llama.output.weight" not in changed
    assert any(n.startswith("llama.layers.") and "lora" in n for n in changed)
    assert ("output_projector.fc.weight" in changed) == (stage == 2)
    assert any(n.startswith("mu_mert.") for n in changed) == (stage == 1)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(x["loss"] > 0 for x in lines)
    if stage > 1:
        assert lines[0]["mse"] > 0  # generation samples: the projector is scored against 10 x T5(caption)
    else:
        assert lines[0]["mse"] == 0
    # the output serves like a converted checkpoint: same logits as the trained model
    served = M2UGen.from_pretrained(out)
    ids = torch.tensor([model.prompt_ids("play something")])
    assert torch.equal(served.next_token_logits(ids), model.next_token_logits(ids))


# the projector (stage 2) against the predict-the-mean baseline: test_train_learning.py
@pytest.mark.parametrize("stage,datasets,metric,ratio", [
    (3, ("alpaca", "muedit"), "ce", 0.5),  # the reply tokens
])
def test_loss_falls_when_overfitting(tmp_path, stage, datasets, metric, ratio):
    synthetic.write_dataset(tmp_path, "alpaca", n=2)
    synthetic.write_dataset(tmp_path, "muedit", n=2)
    synthetic.write_dataset(tmp_path, "mucaps", n=4)
    model = tiny()
    s = train(model, quick(stage, datasets=datasets, max_steps=20, batch_size=4, lr=3e-2, min_lr=3e-2, save_every=100,
                           save_at_end=False), tmp_path, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    first = sum(x[metric] for x in lines[:3]) / 3
    last = sum(x[metric] for x in lines[-3:]) / 3
    assert s["step"] == 20 and last < ratio * first, (first, last)


def _audio_sensitivity(model, tmp_path) -> float:
    from m2ugen import media

    a = model.music_encoder.encode(media.load_audio(str(tmp_path / "MUCaps/audios/mucaps_0000.wav"), 24000))
    b = model.music_encoder.encode(media.load_audio(str(tmp_path / "MUCaps/audios/mucaps_0003.wav"), 24000))
    ids = torch.tensor([model.prompt_ids("describe")])
    return float((model.next_token_logits(ids, audio_feats=a) - model.next_token_logits(ids, audio_feats=b)).abs().max())


def test_gates_train_only_where_adapters_enter_reference_keeps_them_zero(tmp_path):
    """Which gates move (that trained gates make the model answer by its audio is proven on held-out
    clips in test_train_learning.py)."""
    synthetic.write_dataset(tmp_path, "mucaps", n=4)
    cfg = quick(1, datasets=("mucaps",), max_steps=4, save_every=100)
    fixed = tiny()
    assert not gates(fixed).any() and _audio_sensitivity(fixed, tmp_path) == 0.0
    train(fixed, cfg, tmp_path, tmp_path / "fixed")
    first = fixed.cfg.n_layers - 3 * fixed.cfg.query_layer  # layers below get no adapter: their gate is unused
    assert gates(fixed)[first:].abs().min() > 0 and not gates(fixed)[:first].any()
    assert _audio_sensitivity(fixed, tmp_path) > 0.0

    ref = tiny()
    train(ref, cfg.reference(), tmp_path, tmp_path / "ref")
    assert not gates(ref).any() and _audio_sensitivity(ref, tmp_path) == 0.0
    assert not (tmp_path / "ref/m2ugen.safetensors").exists()  # official: no end-of-run save


def test_aud_search_per_row_and_the_reference_enumeration():
    aud = list(range(100, 108))
    labels = torch.zeros(3, 20, dtype=torch.long)
    labels[1, 5:13] = torch.tensor(aud)  # row 0: a text sample; rows 1 and 2: generation samples
    labels[2, 9:17] = torch.tensor(aud)
    assert aud_positions(labels, [1, 2], aud, "per_row", ["a", "b", "c"]) == [(1, 4), (2, 8)]
    # official: the i-th [AUD0] occurrence is read from batch row i
    assert aud_positions(labels, [1, 2], aud, "reference", ["a", "b", "c"]) == [(0, 4), (1, 8)]
    labels[2, 12] = 0
    with pytest.raises(ValueError, match="c: generation sample without a complete"):
        aud_positions(labels, [1, 2], aud, "per_row", ["a", "b", "c"])


def test_weight_decay_only_on_trained_matrices():
    model = tiny()
    for cfg, decays_embeddings in ((quick(1), False), (quick(1).reference(), True)):
        trained = set_trainable(model, cfg)
        groups = param_groups(model, trained, cfg)
        names = {id(p): n for n, p in trained.items()}
        decayed = {names[id(p)] for p in groups[0]["params"]}
        assert ("llama.tok_embeddings.weight" in decayed) == decays_embeddings
        assert ("prefix_query.weight" in decayed) == decays_embeddings
        assert "llama.layers.0.attention.lora_wq_l1.weight" in decayed and "mu_mert.f1_1.weight" in decayed
        assert not any(n.endswith((".bias", "norm.weight", ".gate")) for n in decayed)
        assert ("llama.layers.0.attention.gate" in trained) == (not decays_embeddings)


def test_training_forward_matches_the_model_and_checkpointing_gradients():
    model = tiny()
    ids = torch.randint(3, 100, (2, 11))
    adapters = model.adapters()
    ref_logits, ref_h = model.llama(ids, adapters=adapters, logits_for="all")
    h = llama_hidden(model.llama, ids, adapters, grad_checkpointing=False)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-6)
    set_trainable(model, quick(3))
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        llama_hidden(model.llama, ids, model.adapters(), ckpt).pow(2).mean().backward()
        grads.append(model.llama.layers[1].attention.lora_wq_l1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-7)


def test_penalty_100_only_in_reference_logs(tmp_path):
    synthetic.write_dataset(tmp_path, "muedit", n=2)
    cfg = quick(3, datasets=("muedit",), max_steps=1, save_every=100)
    losses = []
    for c in (cfg, cfg.reference().replace(save_at_end=True)):
        train(tiny(), c, tmp_path, tmp_path / c.name / str(c.penalty_100))
        line = json.loads((tmp_path / c.name / str(c.penalty_100) / "metrics.jsonl").read_text().splitlines()[0])
        losses.append(line)
    assert losses[0]["ce"] < 100 and losses[1]["ce"] > 100
    assert abs((losses[1]["ce"] - 100) - losses[0]["ce"]) < 0.5  # a constant: no training effect


def test_presets_and_config_errors():
    assert TrainConfig.preset("stage1").datasets == ("mucaps", "coco", "muvideo-captions")
    assert TrainConfig.preset("stage2").epochs == 5 and TrainConfig.preset("stage3").lr == 1e-4
    ref = TrainConfig.preset("stage3-reference")
    assert not ref.train_gates and ref.bad_samples == "reference" and ref.penalty_100
    with pytest.raises(ValueError, match="unknown training preset"):
        TrainConfig.preset("stage4")
    with pytest.raises(ValueError) as e:
        TrainConfig(stage=4, batch_size=0, aud_search="x").check()
    assert "stage must be" in str(e.value) and "batch_size" in str(e.value) and "aud_search" in str(e.value)
