"""Personal fine-tunes: a LoRA on the MusicGen decoder from a folder of clips, saved and loaded back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from m2ugen.train import synthetic
from m2ugen.train.finetune import FinetuneConfig, apply_adapter, delay_pattern, finetune, select_adapter
from train_util import tiny, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("peft")


def _decoder_logits(model, codes, caption):
    musicgen = model.decoder.model
    text = model.decoder._text_inputs([caption])
    labels = delay_pattern(codes, musicgen.config.decoder.pad_token_id).transpose(1, 2)
    with torch.no_grad():
        return musicgen(input_ids=text["input_ids"], attention_mask=text["attention_mask"], labels=labels).logits


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i in range(3):
        synthetic.write_audio(d / f"take_{i}.wav", i, seconds=0.6)
    (d / "take_0.txt").write_text("warm piano chords\n")
    (d / "take_1.txt").write_text("fast drums and bass")
    return d


def test_delay_pattern():
    codes = torch.arange(1, 7).reshape(1, 2, 3)
    assert delay_pattern(codes, 0).tolist() == [[[1, 2, 3, 0], [0, 4, 5, 6]]]


def test_finetune_changes_the_decoder_and_loads_back(tmp_path, clips):
    model = tiny()
    codes = torch.randint(0, 64, (1, 4, 20))
    cap = "warm piano chords"
    base_logits = _decoder_logits(model, codes, cap)
    base_audio = model.decoder.generate(text=cap, duration_s=0.2, seed=1)

    out = tmp_path / "adapter"
    info = finetune(model, clips, out, FinetuneConfig(steps=6, batch_size=2, lr=1e-2, clip_s=0.5, name="mine"))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert [c["caption_source"] for c in info["clips"]] == ["sidecar", "sidecar", "model"]
    assert info["clips"][0]["caption"] == "warm piano chords" and info["clips"][2]["caption"]
    assert info["steps"] == 6 and json.loads((out / "m2ugen_adapter.json").read_text())["name"] == "mine"

    tuned_logits = _decoder_logits(model, codes, cap)
    assert (tuned_logits - base_logits).abs().max() > 1e-3
    tuned_audio = model.decoder.generate(text=cap, duration_s=0.2, seed=1)
    assert not np.array_equal(tuned_audio, base_audio)
    select_adapter(model, None)  # the base model again
    torch.testing.assert_close(_decoder_logits(model, codes, cap), base_logits, rtol=0, atol=1e-6)

    fresh = tiny()
    assert apply_adapter(fresh, out) == "mine"
    torch.testing.assert_close(_decoder_logits(fresh, codes, cap), tuned_logits, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fresh.decoder.generate(text=cap, duration_s=0.2, seed=1), tuned_audio)

    # a second adapter under another name; selection per request
    other = tmp_path / "other"
    finetune(tiny(), clips, other, FinetuneConfig(steps=3, lr=1e-2, clip_s=0.5, name="other", seed=5))
    apply_adapter(fresh, other)
    other_logits = _decoder_logits(fresh, codes, cap)
    assert (other_logits - tuned_logits).abs().max() > 1e-4
    select_adapter(fresh, "mine")
    torch.testing.assert_close(_decoder_logits(fresh, codes, cap), tuned_logits, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="already loaded"):
        apply_adapter(fresh, out)

    # the adapter dir is a plain PEFT dir for the MusicGen decoder
    from peft import PeftModel

    plain = tiny()
    peft_dec = PeftModel.from_pretrained(plain.decoder.model.decoder, str(out))
    plain.decoder.model.decoder = peft_dec
    torch.testing.assert_close(_decoder_logits(plain, codes, cap), tuned_logits, rtol=0, atol=1e-6)


def test_finetune_with_llm_lora_changes_the_text(tmp_path, clips):
    model = tiny()
    ids = torch.tensor([model.prompt_ids("Describe the music")])
    before = model.next_token_logits(ids)
    out = tmp_path / "both"
    info = finetune(model, clips, out, FinetuneConfig(steps=3, lr=1e-2, clip_s=0.5, llm=True))
    assert info["targets"] == ["decoder", "llm"] and (out / "llm/adapter_model.safetensors").is_file()
    after = model.next_token_logits(ids)
    assert (after - before).abs().max() > 1e-4
    fresh = tiny()
    apply_adapter(fresh, out)
    torch.testing.assert_close(fresh.next_token_logits(ids), after, rtol=0, atol=1e-5)


def test_unreadable_clips_are_listed(tmp_path):
    from m2ugen.train.data import DatasetError

    (tmp_path / "a.wav").write_bytes(b"nope")
    (tmp_path / "b.wav").write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        finetune(tiny(), tmp_path, tmp_path / "out", FinetuneConfig(steps=1))
    assert "a.wav" in str(e.value) and "b.wav" in str(e.value)
