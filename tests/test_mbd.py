"""Multi-Band Diffusion (m2ugen/mbd.py): the official file's layout and key names, the band split, the
sampler, and the MusicGen decoder's vocoder="mbd" hook. Tiny random models only; nothing downloads."""

from __future__ import annotations

import math
import re

import pytest
import torch

from m2ugen import mbd as M
from m2ugen.config import M2UGenConfig

SR = 32000


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions: one thread is ~100x faster than two contending ones on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> M.MultiBandDiffusion:
    return M.MultiBandDiffusion.random(M.MBDConfig.preset("tiny"))


@pytest.fixture(scope="module")
def codec():
    """The tiny MusicGen preset's EnCodec (32 kHz, hop 640, 4 codebooks of 64, latent dim 16), random."""
    from transformers import EncodecConfig, EncodecModel

    c = M2UGenConfig.preset("tiny").decoder_config["audio_encoder"]
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(**c)).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()  # transformers leaves them at zero (so does the decoders' tiny init)
    return model


def _codes(frames: int, seed: int, k: int = 4, card: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, card, (1, k, frames), generator=g)


def _wav(tiny, codes, codec, seed=0, **kw):
    return tiny.tokens_to_wav(codes, codec, generator=torch.Generator().manual_seed(seed), **kw)


def _save(path, mbd, *, omegaconf: bool = True, edit=None):
    """Write ``mbd`` in the official file structure, configs as real omegaconf DictConfigs (as released)."""
    pkg = M.official_package(mbd)
    if edit is not None:
        edit(pkg)
    if omegaconf:
        from omegaconf import OmegaConf

        for entry in pkg.values():
            if isinstance(entry, dict) and isinstance(entry.get("cfg"), dict):
                entry["cfg"] = OmegaConf.create(entry["cfg"])
    torch.save(pkg, path)
    return path


# ----------------------------------------------------------------------------------------------
# key layout


OFFICIAL_BAND_KEYS = {  # audiocraft/models/unet.py DiffusionUnet, depth 2, 1 res block, emb_all_layers
    "embedding.weight", "embeddings.0.weight", "conv_codec.weight", "conv_codec.bias",
    *[f"encoders.{d}.{n}" for d in range(2) for n in ("conv.weight", "norm.weight", "norm.bias")],
    *[f"decoders.{d}.{n}" for d in range(2) for n in ("convtr.weight", "norm.weight", "norm.bias")],
    *[f"{side}.{d}.res_blocks.0.{m}.{p}" for side in ("encoders", "decoders") for d in range(2)
      for m in ("norm1", "conv1", "norm2", "conv2") for p in ("weight", "bias")],
}
PROCESSOR_KEYS = {"counts", "sum_x", "sum_x2", "sum_target_x2", "split_bands.lowpass.filters"}


def test_state_dict_names_are_audiocrafts(tiny):
    pkg = M.official_package(tiny)
    assert pkg["sample_rate"] == SR and pkg["n_bands"] == 4
    for i in range(4):
        assert set(pkg[i]) == {"cfg", "model_state", "processor_state"}
        assert set(pkg[i]["model_state"]) == OFFICIAL_BAND_KEYS
    assert pkg[0]["processor_state"] == {} and pkg[1]["processor_state"] == {}  # SampleProcessor
    assert set(pkg[2]["processor_state"]) == PROCESSOR_KEYS == set(pkg[3]["processor_state"])


def test_official_shapes_from_the_public_config():
    """The 32 kHz preset (basic.yaml: hidden 48, growth 4, depth 4, kernel 8) on the meta device."""
    band = M.MBDConfig.preset("musicgen-32khz").bands[0]
    with torch.device("meta"):
        sd = M.DiffusionUnet(band).state_dict()
    assert band.widths() == [48, 192, 768, 3072]
    assert sd["encoders.0.conv.weight"].shape == (48, 1, 8)
    assert sd["encoders.3.conv.weight"].shape == (3072, 768, 8)
    assert sd["decoders.0.convtr.weight"].shape == (3072, 768, 8)  # deepest first
    assert sd["decoders.3.convtr.weight"].shape == (48, 1, 8)
    assert sd["encoders.3.res_blocks.0.conv1.weight"].shape == (3072, 3072, 3)
    assert sd["embeddings.2.weight"].shape == (1000, 3072) and "embeddings.3.weight" not in sd
    assert sd["conv_codec.weight"].shape == (3072, 128, 1)
    assert M.parameter_count(band) == sum(t.numel() for t in sd.values())


def test_loader_accepts_the_official_structure_from_a_dir_and_the_hf_cache(tiny, codec, tmp_path, monkeypatch):
    _save(tmp_path / M.OFFICIAL_FILENAME, tiny)
    want = _wav(tiny, _codes(5, 1), codec, steps=3, eq=False)  # a loaded file has the official 20 steps, 32 EQ bands

    loaded = M.load_mbd(tmp_path)
    assert [b.cfg for b in loaded.bands] == [b.cfg for b in tiny.bands]  # architecture read from the cfg
    assert torch.equal(_wav(loaded, _codes(5, 1), codec, steps=3, eq=False), want)

    import huggingface_hub.constants as hc

    snap = tmp_path / "hub" / "models--facebook--multiband-diffusion" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / M.OFFICIAL_FILENAME).symlink_to(tmp_path / M.OFFICIAL_FILENAME)
    (tmp_path / "hub" / "models--facebook--multiband-diffusion" / "refs").mkdir()
    (tmp_path / "hub" / "models--facebook--multiband-diffusion" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert M.find_mbd_file() == snap / M.OFFICIAL_FILENAME
    assert torch.equal(_wav(M.load_mbd(), _codes(5, 1), codec, steps=3, eq=False), want)


def test_reading_needs_no_omegaconf_and_runs_no_code(tiny, tmp_path):
    path = _save(tmp_path / "mbd.th", tiny)
    pkg = M.read_mbd_package(path)
    assert pkg[3]["cfg"]["processor"]["power_std"] == 0.75 and pkg[0]["cfg"]["diffusion_unet"]["hidden"] == 8
    assert type(pkg[3]["cfg"]) is dict

    class Evil:
        def __reduce__(self):
            return (print, ("ran code from the file",))

    torch.save({"sample_rate": SR, "n_bands": 1, 0: {"cfg": Evil()}}, tmp_path / "evil.th")
    with pytest.raises(ValueError, match="not a readable MBD checkpoint"):
        M.read_mbd_package(tmp_path / "evil.th")


def _drop(band: int, section: str, key: str):
    def edit(pkg):
        del pkg[band][section][key]
    return edit


def _rename(band: int, key: str, new: str):
    def edit(pkg):
        sd = pkg[band]["model_state"]
        sd[new] = sd.pop(key)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_drop(1, "model_state", "encoders.1.conv.weight"), "band 1 model_state: 1 missing key(s): encoders.1.conv.weight"),
    (_drop(3, "processor_state", "sum_x2"), "band 3 processor_state: 1 missing key(s): sum_x2"),
    (_rename(0, "conv_codec.weight", "codec_conv.weight"),
     "band 0 model_state: 1 missing key(s): conv_codec.weight; band 0 model_state: 1 unexpected key(s): "
     "codec_conv.weight"),
    (lambda pkg: pkg[2]["cfg"]["diffusion_unet"].update(hidden=12),
     r"re:band 2 model_state: \d+ mis-shaped key\(s\): "
     r"encoders.0.conv.weight \(file \[8, 1, 8\], model \[12, 1, 8\]\)"),
    (lambda pkg: pkg.pop(3), "band 3: missing"),
    (lambda pkg: pkg.pop("n_bands"), "no 'n_bands' entry"),
    (lambda pkg: pkg[1]["cfg"]["diffusion_unet"].update(transformer=True),
     "band 1 cfg: diffusion_unet.transformer=True is not implemented"),
])
def test_loader_rejects_a_wrong_file_naming_what_is_wrong(tiny, tmp_path, edit, message):
    path = _save(tmp_path / "bad.th", tiny, edit=edit)
    with pytest.raises(ValueError, match=message[3:] if message.startswith("re:") else re.escape(message)):
        M.load_mbd(path)


def test_loader_refuses_a_file_that_is_not_a_package(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "x.th")
    with pytest.raises(ValueError, match="no 'sample_rate' entry"):
        M.load_mbd(tmp_path / "x.th")
    (tmp_path / "half.th").write_bytes((tmp_path / "x.th").read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable MBD checkpoint"):
        M.load_mbd(tmp_path / "half.th")
    with pytest.raises(FileNotFoundError, match="has no mbd_musicgen_32khz.th"):
        M.load_mbd(tmp_path)


# ----------------------------------------------------------------------------------------------
# band split, processor, schedule


def test_band_splits_sum_back_to_the_signal(tiny):
    x = torch.randn(2, 1, 6000)
    proc = tiny.bands[2].processor
    bands = proc.split_bands(x)
    assert bands.shape == (8, 2, 1, 6000)
    assert torch.allclose(bands.sum(0), x, atol=1e-5)
    assert torch.allclose(tiny.equalize(x, x), x, atol=1e-5)  # 8 EQ bands, each gain 1
    ref = torch.cat([x[:, :, :3000] * 3, x[:, :, 3000:] * 3], dim=-1)
    assert torch.allclose(tiny.equalize(x, ref), 3 * x, atol=1e-4)


def test_equalize_matches_each_channel_on_its_own_unless_reference(tiny):
    x = torch.randn(1, 2, 4000)
    ref = x * torch.tensor([1.0, 4.0]).view(1, 2, 1)
    assert torch.allclose(tiny.equalize(x, ref), ref, atol=1e-4)
    joint = tiny.equalize(x, ref, reference=True)  # audiocraft: one gain per band for both channels
    assert not torch.allclose(joint, ref, atol=1e-2)


def test_processor_maps_back_with_its_statistics(tiny):
    proc = tiny.bands[3].processor
    x = torch.randn(1, 1, 5000)
    stats = (proc.std / proc.target_std) ** proc.power_std
    want = sum(b * s + m for b, s, m in zip(proc.split_bands(x), stats, proc.mean))
    assert torch.allclose(proc.return_sample(x), want, atol=1e-5)
    assert not torch.allclose(proc.return_sample(x), x, atol=1e-2)


def test_step_lists():
    assert M.step_list(1000, M.OFFICIAL_STEPS) == list(range(1000))[::-50] + [0]
    assert M.step_list(1000, M.FAST_STEPS) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99, 0]
    with pytest.raises(ValueError, match="steps must be an integer"):
        M.step_list(1000, 0)


class _Oracle(torch.nn.Module):
    """Predicts the exact noise of x_t for a known clean signal x0 (the schedule's forward process)."""

    def __init__(self, x0, ab):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.x0, self.ab = x0, ab

    def forward(self, x, step, condition):
        return (x - self.ab[step].sqrt() * self.x0) / (1 - self.ab[step]).sqrt()


def test_sampler_recovers_the_signal_with_an_exact_noise_predictor():
    """With the true noise the reverse process lands on x0: the sampler's update rules are right."""
    band = M.MBDConfig.preset("musicgen-32khz").bands[0]
    ab = M.alpha_bars(band)
    x0 = 0.3 * torch.randn(1, 1, 2000)
    for steps in (M.OFFICIAL_STEPS, 4):
        out = M.sample_band(_Oracle(x0, ab), M.SampleProcessor(), band, torch.zeros(1, 1, 1),
                            torch.randn(1, 1, 2000, generator=torch.Generator().manual_seed(3)),
                            M.step_list(1000, steps), torch.Generator().manual_seed(4))
        assert (out - x0).abs().max() < 1e-2 * x0.abs().max()
    # the power schedule, beta 1e-5 .. 2.9e-2 with exponent 7.5: sum of betas ~5.2, so alpha_bar ends near e^-5.2
    assert math.isclose(1 - ab[0].item(), 1e-5, rel_tol=0.05) and 0.004 < ab[-1] < 0.007


# ----------------------------------------------------------------------------------------------
# decoding


def test_output_length_equals_the_encodec_decoders(tiny, codec):
    for frames in (1, 7, 13):
        codes = _codes(frames, frames)
        encodec = codec.decode(codes[None], [None]).audio_values
        out = _wav(tiny, codes, codec)
        assert out.shape == encodec.shape == (1, 1, frames * 640)
        assert torch.isfinite(out).all()


def test_deterministic_for_a_seed_and_different_for_another(tiny, codec):
    codes = _codes(6, 2)
    a, b, c = (_wav(tiny, codes, codec, seed=s) for s in (5, 5, 6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-4)


def test_the_condition_matters(tiny, codec):
    a = _wav(tiny, _codes(6, 2), codec, eq=False)
    b = _wav(tiny, _codes(6, 3), codec, eq=False)  # same noise, other codes
    assert (a - b).abs().max() > 1e-3


def test_progress_once_per_step(tiny, codec):
    seen = []
    _wav(tiny, _codes(3, 1), codec, steps=2, on_progress=seen.append)
    assert len(seen) == 4 * 2  # 4 bands x 2 UNet calls
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_bad_inputs_are_named(tiny, codec):
    with pytest.raises(ValueError, match=r"EnCodec latent \[B, 16, frames\]"):
        tiny.generate(torch.zeros(1, 8, 4), 100)
    with pytest.raises(ValueError, match="integer tensor"):
        tiny.tokens_to_wav(torch.zeros(1, 4, 3), codec)
    with pytest.raises(ValueError, match="descend strictly and end in 0"):
        tiny.generate(torch.zeros(1, 16, 4), 2560, steps=[10, 20, 0])


def test_estimate_figures_in_the_docs_follow_from_the_config():
    band = M.MBDConfig.preset("musicgen-32khz").bands[0]
    total = 4 * M.parameter_count(band)
    assert 660e6 < total < 665e6
    assert math.isclose(M.unet_macs(band, 10 * SR) / 1e9, 251, rel_tol=0.02)


# ----------------------------------------------------------------------------------------------
# the MusicGen decoder hook


@pytest.fixture(scope="module")
def stereo_decoder():
    from m2ugen.decoders import MusicGenDecoder

    cfg = M2UGenConfig.preset("tiny")
    dc = {k: dict(v) for k, v in cfg.decoder_config.items()}
    dc["decoder"].update(audio_channels=2, num_codebooks=8)  # musicgen-stereo-*: a mono EnCodec, codebooks interleaved
    return MusicGenDecoder(cfg.replace(decoder_config=dc))


def test_decoder_vocoder_mbd_mono():
    from m2ugen.decoders import MusicGenDecoder

    dec = MusicGenDecoder(M2UGenConfig.preset("tiny"))
    base = dec.generate(text="calm piano", duration_s=0.3, seed=2)
    seen = []
    out = dec.generate(text="calm piano", duration_s=0.3, seed=2, vocoder="mbd", mbd_steps=2, on_progress=seen.append)
    assert out.shape == base.shape and out.dtype == base.dtype
    assert not torch.allclose(torch.from_numpy(out), torch.from_numpy(base), atol=1e-3)
    assert seen[-1] == 1.0 and seen == sorted(seen) and max(f for f in seen if f <= 0.5) == 0.5
    again = dec.generate(text="calm piano", duration_s=0.3, seed=2, vocoder="mbd", mbd_steps=2)
    assert (out == again).all()
    with pytest.raises(ValueError, match="vocoder for the MusicGen decoder must be one of encodec, mbd"):
        dec.generate(text="x", duration_s=0.3, vocoder="hifigan")


def test_stereo_channels_are_decoded_from_their_own_codes(stereo_decoder):
    dec = stereo_decoder
    out = dec.generate(text="wide synth pad", duration_s=0.3, seed=3, vocoder="mbd", mbd_steps=2)
    assert out.shape[0] == 2 and out.shape == dec.generate(text="wide synth pad", duration_s=0.3, seed=3).shape
    assert not torch.allclose(torch.from_numpy(out[0]), torch.from_numpy(out[1]), atol=1e-3)

    # the same codes on both channels give the same two channels: the difference above is the codes'
    codec = dec.model.audio_encoder
    codes = _codes(5, 9)[None]
    left = codec.decode(codes, [None]).audio_values
    same = dec._mbd_decode([(codes, left), (codes, left)], seed=3, steps=2, on_progress=None)
    assert torch.equal(same[:, 0], same[:, 1])


def test_audioldm2_refuses_mbd():
    from m2ugen.decoders import AudioLDM2Decoder

    dec = AudioLDM2Decoder(M2UGenConfig.preset("tiny-audioldm2"))
    with pytest.raises(ValueError, match="AudioLDM2 decoder must be one of encodec"):
        dec.generate(text="x", duration_s=0.1, vocoder="mbd")
