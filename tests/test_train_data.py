"""Dataset readers in the published layouts, up-front validation, bad-sample policy, feature cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from m2ugen.train import synthetic
from m2ugen.train.data import AUD_SUFFIX, LAYOUTS, DatasetError, collate, read_dataset, read_datasets, tokenize
from train_util import quick, tiny, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny()


def test_every_reader_reads_its_published_layout(tmp_path):
    for name in LAYOUTS:
        synthetic.write_dataset(tmp_path, "mucaps" if name == "mucaps-decoder" else name, n=3)
    for name, lay in LAYOUTS.items():
        entries, problems, skipped = read_dataset(name, tmp_path)
        assert problems == [] and skipped == 0 and len(entries) == 3, name
        e = entries[1]
        assert e.modality == lay.modality
        assert (e.media is None) == (lay.media_dir is None)
        if e.media:
            assert e.media.startswith(str(tmp_path / lay.folder / lay.media_dir))
        generation = lay.kind in ("instructions", "captions-decoder")
        assert bool(e.music_caption) == generation and e.answer.endswith(AUD_SUFFIX) == generation
    # official rules: stage 1 captions answer an empty instruction; stage 2 repeats the caption, no space
    cap = read_dataset("mucaps", tmp_path)[0][0]
    dec = read_dataset("mucaps-decoder", tmp_path)[0][0]
    assert cap.instruction == "" and cap.answer == synthetic.caption(0)
    assert dec.instruction == cap.answer and dec.answer == cap.answer + AUD_SUFFIX and dec.music_caption == cap.answer
    edit = read_dataset("muedit", tmp_path)[0][0]
    assert edit.answer.endswith(" " + AUD_SUFFIX) and edit.music_caption == synthetic.caption(2)


def test_instructions_without_answer_are_skipped_like_official(tmp_path):
    j = synthetic.write_dataset(tmp_path, "muimage", n=3)
    items = json.loads(j.read_text())
    items[1]["conversation"][-1]["value"] = None
    j.write_text(json.dumps(items))
    entries, problems, skipped = read_dataset("muimage", tmp_path)
    assert len(entries) == 2 and skipped == 1 and problems == []


def test_every_broken_entry_is_listed_with_its_file_before_step_1(tmp_path, model):
    synthetic.write_stage(tmp_path, 3, n=3)
    missing = tmp_path / "MusicQA/audios/musicqa_0001.wav"
    missing.unlink()
    garbage = tmp_path / "MUImage/audioset_images/muimage_0002.png"
    garbage.write_bytes(b"not a png at all")
    empty = tmp_path / "MUVideo/audioset_video/muvideo_0000.mp4"
    empty.write_bytes(b"")
    j = tmp_path / "MUEdit/MUEditInstructions.json"
    items = json.loads(j.read_text())
    del items[2]["input_file"]
    j.write_text(json.dumps(items))
    (tmp_path / "Alpaca/alpaca_data.json").write_text("{broken json")

    with pytest.raises(DatasetError) as err:
        read_datasets(quick(3).datasets, tmp_path, tokenizer=model.tokenizer)
    text = str(err.value)
    assert len(err.value.problems) == 5, text
    for needle in (str(missing), str(garbage), str(empty), "MUEditInstructions.json entry 2", "alpaca_data.json"):
        assert needle in text
    assert "missing" in text and "empty" in text and "unreadable JSON" in text

    from m2ugen.train.trainer import train

    out = tmp_path / "run"
    with pytest.raises(DatasetError, match="musicqa_0001.wav"):
        train(model, quick(3, max_steps=1), tmp_path, out)
    assert not (out / "metrics.jsonl").exists() and not (out / "state").exists()


def test_truncation_that_drops_the_aud_span_is_reported(tmp_path, model):
    synthetic.write_dataset(tmp_path, "muedit", n=2)
    with pytest.raises(DatasetError, match=r"MUEditInstructions.json entry \d: the \[AUD0..7\] span does not fit"):
        read_datasets(["muedit"], tmp_path, tokenizer=model.tokenizer, max_words=40)


def test_tokens_labels_and_padding(tmp_path, model):
    synthetic.write_dataset(tmp_path, "alpaca", n=2)
    synthetic.write_dataset(tmp_path, "muedit", n=1)
    entries = read_datasets(["alpaca", "muedit"], tmp_path)
    ids, labels = tokenize(entries[0], model.tokenizer, 256)
    assert ids[0] == model.tokenizer.bos_token_id and model.tokenizer.eos_token_id not in ids.tolist()
    n_prompt = int((labels == 0).sum())
    assert torch.equal(labels[n_prompt:], ids[n_prompt:]) and n_prompt > 10
    items = [dict(input_ids=x[0], labels=x[1], modality="text", music_caption="", file="f", where="w")
             for x in (tokenize(e, model.tokenizer, 256) for e in entries)]
    b = collate(items)
    lengths = [len(i["input_ids"]) for i in items]
    assert b.input_ids.shape == (3, max(lengths))
    short = lengths.index(min(lengths))
    assert not b.input_ids[short, min(lengths):].any() and not b.labels[short, min(lengths):].any()


def test_bad_sample_policy_fatal_or_skip_names_the_file(tmp_path, model):
    from m2ugen.train.trainer import train

    synthetic.write_dataset(tmp_path, "musicqa", n=4)
    bad = tmp_path / "MusicQA/audios/musicqa_0002.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage that passes an existence check")
    cfg = quick(3, datasets=("musicqa",), validate="exists", max_steps=2, save_every=100)
    with pytest.raises(DatasetError, match="musicqa_0002.wav"):
        train(model, cfg, tmp_path, tmp_path / "fatal")
    summary = train(model, cfg.replace(bad_samples="skip"), tmp_path, tmp_path / "skip")
    assert summary["status"] == "finished" and summary["skipped_bad"] >= 1
    ref = train(model, cfg.reference(), tmp_path, tmp_path / "ref")  # the official bare except: silent
    assert ref["skipped_bad"] == 0


def test_feature_cache_is_keyed_by_content_and_encoder(tmp_path, model):
    from m2ugen.train.features import FeatureCache, precompute

    synthetic.write_dataset(tmp_path, "mucaps", n=3)
    synthetic.write_dataset(tmp_path, "coco", n=2)
    entries = read_datasets(["mucaps", "coco"], tmp_path)
    cache = FeatureCache(tmp_path / "cache", model.cfg)
    assert precompute(model, entries, cache) == 5
    assert precompute(model, entries, FeatureCache(tmp_path / "cache", model.cfg)) == 0
    wav = entries[0].media
    direct = model.music_encoder.encode(__import__("m2ugen.media", fromlist=["x"]).load_audio(wav, 24000))
    assert torch.equal(cache.get(wav, "audio"), direct)
    # same content under another name: a hit; another encoder setting: a miss
    copy = tmp_path / "copy.wav"
    shutil.copy(wav, copy)
    assert cache.has(str(copy), "audio")
    other = FeatureCache(tmp_path / "cache", model.cfg.replace(mert_windows="reference"))
    assert not other.has(wav, "audio") and other.has(entries[3].media, "image")
