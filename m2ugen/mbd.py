"""Multi-Band Diffusion (MBD): MusicGen's EnCodec codes -> waveform, one diffusion model per frequency band.

San Roman et al. 2023, "From Discrete Tokens to High-Fidelity Audio Using Multi-Band Diffusion"
(arXiv 2308.02560). Written from a reading of audiocraft's public source (audiocraft itself cannot be
installed beside torch 2.13). Module and parameter names are those of audiocraft's state dicts, so the
official ``mbd_musicgen_32khz.th`` (facebook/multiband-diffusion) loads by its own key names:

- ``DiffusionUnet``, ``EncoderLayer``, ``DecoderLayer``, ``ResBlock``: audiocraft/models/unet.py;
- ``MultiBandProcessor`` / ``SampleProcessor``, ``NoiseSchedule`` and its sampler
  ``generate_subsampled``: audiocraft/modules/diffusion_schedule.py;
- ``MultiBandDiffusion.generate`` / ``re_eq`` / ``tokens_to_wav`` and ``get_mbd_musicgen``:
  audiocraft/models/multibanddiffusion.py;
- the file layout, read by ``load_diffusion_models``: audiocraft/models/loaders.py.

Decoding one channel (``MultiBandDiffusion.tokens_to_wav``):

1. condition = the EnCodec latent of the codes, ``quantizer.decode(codes)`` (audiocraft
   ``CompressionModel.decode_latent``): [B, 128, frames] at 50 Hz for MusicGen's 32 kHz EnCodec;
2. every band model starts from its own Gaussian noise of the EnCodec decoder's output length and runs
   the subsampled DDPM reverse process (by default 20 UNet calls: steps 999, 949, ..., 49, then 0); the
   UNet predicts the noise; its bottleneck (4 stride-4 levels: 125 Hz) receives the condition through a
   1x1 conv and nearest-neighbour interpolation;
3. the band's sample processor maps the result back from its rescaled space (bands 2 and 3 of the
   official model: 8 mel bands, each rescaled by its fitted (std / noise std) ** power_std, plus mean);
4. the four band outputs are summed, then equalised to the EnCodec decoder's output: 32 mel bands,
   each scaled by std(encodec band) / std(diffusion band) (``re_eq``).

Each band model was trained on one of 4 mel-spaced bands of the signal (julius ``SplitBands``, training
only: inference sums the models' outputs unfiltered).

Official file (``loaders.load_diffusion_models``)::

    {"sample_rate": 32000, "n_bands": 4,
     0: {"cfg": <omegaconf DictConfig>, "model_state": <DiffusionUnet state dict>,
         "processor_state": <MultiBandProcessor state dict, or {} for the identity SampleProcessor>},
     1: ..., 2: ..., 3: ...}

Each band's ``cfg`` holds the hyper-parameters (``channels``, ``diffusion_unet``, ``schedule``,
``processor``); the architecture is rebuilt from it, then every key and shape is checked strictly. The
config is read without omegaconf and without running code from the file: the weights-only unpickler
with inert stand-ins for omegaconf's classes (see ``read_mbd_package``).

Differences from audiocraft, both fixed by default (``reference=True`` restores them in ``equalize``):
the EQ match takes each band's std per item and channel (audiocraft: over the whole batch, so the
channels of a stereo track and the items of a batch equalise each other), and a silent band is not
divided by zero.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

OFFICIAL_REPO = "facebook/multiband-diffusion"
OFFICIAL_FILENAME = "mbd_musicgen_32khz.th"
OFFICIAL_STEPS = 20  # generate_subsampled's default step list: list(range(1000))[::-50] + [0]
FAST_STEPS = 10  # half the UNet calls (steps 999, 899, ..., 99, then 0); quality not measured here
EQ_BANDS = 32  # tokens_to_wav(n_bands=32)

ProgressFn = Callable[[float], None] | None


# ----------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class BandConfig:
    """One band's diffusion model: its UNet, noise schedule and sample processor.

    Defaults are the public training configs: config/model/score/basic.yaml (``diffusion_unet``),
    config/solver/diffusion/default.yaml (``schedule``, ``processor``), and codec_dim = the EnCodec
    latent dim (128; the released configs set it, basic.yaml leaves it null). A file's own ``cfg``
    replaces them when it is loaded.
    """

    # DiffusionUnet (unet.py) / diffusion_unet.*
    channels: int = 1
    hidden: int = 48
    depth: int = 4
    growth: float = 4.0
    max_channels: int = 10_000
    kernel: int = 8
    stride: int = 4
    res_blocks: int = 1
    norm_groups: int = 4
    emb_all_layers: bool = True
    codec_dim: int = 128
    # NoiseSchedule (diffusion_schedule.py) / schedule.*
    num_steps: int = 1000
    beta_t0: float = 1e-5
    beta_t1: float = 2.9e-2
    beta_exp: float = 7.5
    clip: float = 5.0
    rescale: float = 1.0
    noise_scale: float = 1.0
    # MultiBandProcessor (diffusion_schedule.py) / processor.*; processor=False: identity SampleProcessor
    processor: bool = False
    processor_bands: int = 8
    power_std: float = 1.0
    num_samples: int = 10_000

    def widths(self) -> list[int]:
        """Output channels of encoders 0..depth-1 (unet.py: hidden, then min(int(c * growth), max_channels))."""
        out, width = [], self.hidden
        for _ in range(self.depth):
            out.append(width)
            width = min(int(width * self.growth), self.max_channels)
        return out


@dataclass(frozen=True)
class MBDConfig:
    name: str = "musicgen-32khz"
    sample_rate: int = 32000
    bands: tuple[BandConfig, ...] = ()
    steps: int = OFFICIAL_STEPS
    eq_bands: int = EQ_BANDS

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    def replace(self, **changes: Any) -> "MBDConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, codec_dim: int | None = None) -> "MBDConfig":
        try:
            make = _PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown MBD preset {name!r}; choose one of {', '.join(_PRESETS)}") from None
        cfg = make()
        if codec_dim is not None:
            cfg = cfg.replace(bands=tuple(dataclasses.replace(b, codec_dim=int(codec_dim)) for b in cfg.bands))
        return cfg


def _musicgen_32khz() -> MBDConfig:
    # audiocraft/grids/diffusion/4_bands_base_32khz.py: 4 band models (filter.idx_band 0..3); the sample
    # processor is on for bands 2 and 3 only, power_std 0.4, 0.4, 0.4, 0.75
    power = (0.4, 0.4, 0.4, 0.75)
    return MBDConfig(bands=tuple(BandConfig(processor=i >= 2, power_std=power[i]) for i in range(4)))


def _tiny() -> MBDConfig:
    """4 tiny random band models (2 levels, 8 -> 16 channels) for the tiny MusicGen (EnCodec dim 16)."""
    bands = tuple(BandConfig(hidden=8, depth=2, growth=2.0, norm_groups=2, codec_dim=16, processor=i >= 2,
                             power_std=0.4 if i < 3 else 0.75) for i in range(4))
    return MBDConfig(name="tiny", bands=bands, steps=3, eq_bands=8)


_PRESETS = {"musicgen-32khz": _musicgen_32khz, "tiny": _tiny}


def step_list(num_steps: int, steps: int) -> list[int]:
    """Markov-chain states visited by the sampler: ``steps`` UNet calls, evenly spaced from the last state,
    then 0. steps=20 of 1000 gives audiocraft's default, list(range(1000))[::-50] + [0]."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_steps:
        raise ValueError(f"MBD steps must be an integer in [1, {num_steps}], got {steps!r}")
    stride = num_steps // steps
    return [num_steps - 1 - k * stride for k in range(steps)] + [0]


# ----------------------------------------------------------------------------------------------
# the UNet (audiocraft/models/unet.py; eval only, so its Dropout1d layers, which hold no weights, are left out)


class ResBlock(nn.Module):
    """x + conv2(relu(norm2(conv1(relu(norm1(x)))))): kernel 3, 'same' padding, dilation 2 ** index."""

    def __init__(self, channels: int, norm_groups: int, dilation: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = nn.GroupNorm(norm_groups, channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(h)))


def _res_blocks(channels: int, band: BandConfig) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, band.norm_groups, 2 ** i) for i in range(band.res_blocks)])


class EncoderLayer(nn.Module):
    """Right-pad to a multiple of the stride, strided conv (no bias), GroupNorm, ReLU, res blocks."""

    def __init__(self, chin: int, chout: int, band: BandConfig):
        super().__init__()
        self.conv = nn.Conv1d(chin, chout, band.kernel, band.stride, (band.kernel - band.stride) // 2, bias=False)
        self.norm = nn.GroupNorm(band.norm_groups, chout)
        self.res_blocks = _res_blocks(chout, band)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, (-x.shape[-1]) % self.conv.stride[0]))
        return self.res_blocks(F.relu(self.norm(self.conv(x))))


class DecoderLayer(nn.Module):
    """Res blocks, GroupNorm, ReLU, transposed conv (no bias) upsampling by the stride."""

    def __init__(self, chin: int, chout: int, band: BandConfig):
        super().__init__()
        self.res_blocks = _res_blocks(chin, band)
        self.norm = nn.GroupNorm(band.norm_groups, chin)
        self.convtr = nn.ConvTranspose1d(chin, chout, band.kernel, band.stride, (band.kernel - band.stride) // 2,
                                         bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(F.relu(self.norm(self.res_blocks(x))))


class DiffusionUnet(nn.Module):
    """Predicts the noise in x_t [B, channels, T] at diffusion step t, given the EnCodec latent [B, D, frames].

    The step embedding is added after encoder 0 (``embedding``) and, with emb_all_layers, after every
    deeper encoder (``embeddings.{d-1}``). ``decoders`` are stored deepest first (audiocraft inserts
    each at index 0). Without a bottleneck transformer / BiLSTM (the configs read here), audiocraft's
    bottleneck output is all zeros and the condition reaches the decoders through the deepest skip:
    ``z += condition_emb`` adds it in place to the tensor also held as that skip.
    """

    def __init__(self, band: BandConfig):
        super().__init__()
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.embedding = nn.Embedding(band.num_steps, band.hidden)
        self.embeddings = nn.ModuleList() if band.emb_all_layers else None
        chin = band.channels
        for d, width in enumerate(band.widths()):
            self.encoders.append(EncoderLayer(chin, width, band))
            self.decoders.insert(0, DecoderLayer(width, chin, band))
            if self.embeddings is not None and d > 0:
                self.embeddings.append(nn.Embedding(band.num_steps, width))
            chin = width
        self.conv_codec = nn.Conv1d(band.codec_dim, chin, 1)

    def forward(self, x: torch.Tensor, step: int, condition: torch.Tensor) -> torch.Tensor:
        steps = torch.full((x.shape[0],), int(step), dtype=torch.long, device=x.device)
        skips = []
        z = x
        for d, encoder in enumerate(self.encoders):
            z = encoder(z)
            table = self.embedding if d == 0 else (self.embeddings[d - 1] if self.embeddings is not None else None)
            if table is not None:
                z = z + table(steps)[:, :, None]
            skips.append(z)
        cond = self.conv_codec(condition)
        if cond.shape[-1] > 2 * z.shape[-1]:
            raise ValueError(f"MBD condition has {cond.shape[-1]} frames for a bottleneck of {z.shape[-1]}: "
                             "downsampling it by 2 or more (wrong codes length or frame rate?)")
        skips[-1] = skips[-1] + F.interpolate(cond, size=z.shape[-1])  # nearest, as audiocraft
        z = None  # the zero bottleneck: the deepest decoder sees its skip alone
        for decoder in self.decoders:
            s = skips.pop()
            z = decoder(s if z is None else z[:, :, : s.shape[-1]] + s)
        return z[:, :, : x.shape[-1]]


# ----------------------------------------------------------------------------------------------
# sample processors (audiocraft/modules/diffusion_schedule.py)


class SampleProcessor(nn.Module):
    """Identity (bands 0 and 1 of the official model); its state dict is empty."""

    def project_sample(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def return_sample(self, z: torch.Tensor) -> torch.Tensor:
        return z


class MultiBandProcessor(SampleProcessor):
    """Splits the signal into ``processor_bands`` mel bands (julius ``SplitBands``, buffer
    ``split_bands.lowpass.filters``) and rescales each one; statistics fitted in training (buffers
    ``counts``, ``sum_x``, ``sum_x2``, ``sum_target_x2``). ``target_std`` is, as in audiocraft, the mean
    *square* of the noise bands (not its root). Unfitted buffers start at counts 1, sums 0 / 1 / 1, which
    make a fresh processor the identity (audiocraft's zeros give NaN until fitted)."""

    def __init__(self, sample_rate: int, n_bands: int, power_std: float):
        super().__init__()
        import julius

        self.power_std = float(power_std)
        self.split_bands = julius.SplitBands(sample_rate, n_bands=n_bands)
        self.register_buffer("counts", torch.ones(1))
        self.register_buffer("sum_x", torch.zeros(n_bands))
        self.register_buffer("sum_x2", torch.ones(n_bands))
        self.register_buffer("sum_target_x2", torch.ones(n_bands))

    @property
    def mean(self) -> torch.Tensor:
        return self.sum_x / self.counts

    @property
    def std(self) -> torch.Tensor:
        return (self.sum_x2 / self.counts - self.mean ** 2).clamp(min=0).sqrt()

    @property
    def target_std(self) -> torch.Tensor:
        return self.sum_target_x2 / self.counts

    def project_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Audio -> diffusion space, with frozen statistics (training also updates them)."""
        bands = self.split_bands(x.float())
        rescale = (self.target_std / self.std.clamp(min=1e-12)) ** self.power_std
        return ((bands - self.mean.view(-1, 1, 1, 1)) * rescale.view(-1, 1, 1, 1)).sum(dim=0)

    def return_sample(self, z: torch.Tensor) -> torch.Tensor:
        bands = self.split_bands(z.float())
        rescale = (self.std / self.target_std) ** self.power_std
        return (bands * rescale.view(-1, 1, 1, 1) + self.mean.view(-1, 1, 1, 1)).sum(dim=0)


# ----------------------------------------------------------------------------------------------
# noise schedule and sampler (NoiseSchedule.generate_subsampled)


def alpha_bars(band: BandConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """Cumulative products of 1 - beta_t for the power schedule
    beta_t = linspace(beta_t0 ** (1 / p), beta_t1 ** (1 / p), num_steps) ** p (float32, as audiocraft)."""
    p = band.beta_exp
    betas = torch.linspace(band.beta_t0 ** (1 / p), band.beta_t1 ** (1 / p), band.num_steps,
                           dtype=torch.float32, device=device) ** p
    return torch.cumprod(1 - betas, dim=0)


def sample_band(model: DiffusionUnet, processor: SampleProcessor, band: BandConfig, condition: torch.Tensor,
                initial: torch.Tensor, steps: Sequence[int], generator: torch.Generator | None = None,
                on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """The subsampled reverse process from ``initial`` noise through the states ``steps`` (descending, ending
    in 0): one UNet call per state but the last. Between visited states s > s', with alpha = ab[s] / ab[s']:
    x <- (x - (1 - alpha) / sqrt(1 - alpha_bar) * eps) / sqrt(alpha), plus sqrt(sigma2) noise,
    sigma2 = (1 - ab[s']) / (1 - alpha_bar) * (1 - alpha), none on the last call; clipped to +-clip.
    alpha_bar starts at the chain's last state whatever steps[0] is, as in audiocraft."""
    ab = alpha_bars(band, initial.device)
    dtype = next(model.parameters()).dtype
    condition = condition.to(dtype)
    alpha_bar = ab[-1]
    current = initial.float() * band.noise_scale
    for idx, step in enumerate(steps[:-1]):
        eps = model(current.to(dtype), step, condition).float() * band.noise_scale
        alpha = ab[step] / ab[steps[idx + 1]]
        previous = (current - (1 - alpha) / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()
        if step == steps[-2]:  # the last UNet call: no noise, and alpha_bar becomes 1
            previous_alpha_bar = torch.ones_like(alpha_bar)
        else:
            previous_alpha_bar = ab[steps[idx + 1]]
            sigma2 = (1 - previous_alpha_bar) / (1 - alpha_bar) * (1 - alpha)
            noise = torch.randn(previous.shape, generator=generator, device=previous.device)
            previous = previous + sigma2.sqrt() * noise * band.noise_scale
        if band.clip:
            previous = previous.clamp(-band.clip, band.clip)
        if step == 0:  # audiocraft's rescale, reached only when 0 is visited before the end
            previous = previous * band.rescale
        current, alpha_bar = previous, previous_alpha_bar
        if on_step is not None:
            on_step()
    return processor.return_sample(current)


# ----------------------------------------------------------------------------------------------
# the multi-band model


class BandDiffusion(nn.Module):
    """One ``DiffusionProcess`` of multibanddiffusion.py: a DiffusionUnet (``model``, the file's
    ``model_state``) and its sample processor (``processor``, the file's ``processor_state``)."""

    def __init__(self, band: BandConfig, sample_rate: int, empty: bool = False):
        super().__init__()
        self.cfg = band
        with torch.device("meta") if empty else contextlib.nullcontext():
            self.model = DiffusionUnet(band)
        self.processor = (MultiBandProcessor(sample_rate, band.processor_bands, band.power_std) if band.processor
                          else SampleProcessor())


def encodec_latent(codec: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """audiocraft ``CompressionModel.decode_latent`` on transformers' ``EncodecModel``: the residual
    quantizer's sum of code embeddings. codes [B, K, frames] -> [B, D, frames] (D = 128 for MusicGen)."""
    return codec.quantizer.decode(codes.transpose(0, 1))


class MultiBandDiffusion(nn.Module):
    """The band models; ``tokens_to_wav`` decodes one channel's EnCodec codes."""

    def __init__(self, cfg: MBDConfig, *, empty: bool = False):
        super().__init__()
        if not cfg.bands:
            raise ValueError("MBDConfig has no bands")
        self.cfg = cfg
        self.bands = nn.ModuleList(BandDiffusion(b, cfg.sample_rate, empty) for b in cfg.bands)

    @classmethod
    def random(cls, cfg: MBDConfig, seed: int = 6) -> "MultiBandDiffusion":
        """Random weights (tiny presets, benchmarks), independent of the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mbd = cls(cfg)
            for band in mbd.bands:
                if isinstance(band.processor, MultiBandProcessor):
                    n = band.processor.sum_x.numel()
                    band.processor.sum_x.normal_(0.0, 1e-3)
                    band.processor.sum_x2.copy_(torch.linspace(0.5, 2.0, n))
                    band.processor.sum_target_x2.copy_(torch.linspace(1.5, 0.5, n))
        return mbd.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.bands[0].model.embedding.weight.device

    def step_list(self, steps: int | None = None) -> list[int]:
        num = self.cfg.bands[0].num_steps
        return step_list(num, self.cfg.steps if steps is None else steps)

    @torch.no_grad()
    def generate(self, condition: torch.Tensor, length: int, *, steps: int | Sequence[int] | None = None,
                 generator: torch.Generator | None = None, on_progress: ProgressFn = None) -> torch.Tensor:
        """EnCodec latent [B, D, frames] -> the sum of the band models' samples [B, channels, length].

        steps: the number of UNet calls per band (default cfg.steps; OFFICIAL_STEPS, FAST_STEPS) or an
        explicit descending state list ending in 0. on_progress(fraction) after every UNet call."""
        condition = self._check_condition(condition)
        states = self.step_list(steps) if steps is None or isinstance(steps, int) else [int(s) for s in steps]
        if len(states) < 2 or states[-1] != 0 or any(a <= b for a, b in zip(states, states[1:])):
            raise ValueError(f"MBD step list must descend strictly and end in 0, got {states}")
        total = len(self.bands) * (len(states) - 1)
        done = [0]

        def tick():
            done[0] += 1
            if on_progress is not None:
                on_progress(done[0] / total)

        shape = (condition.shape[0], self.cfg.bands[0].channels, int(length))
        out = torch.zeros(shape, device=condition.device)
        for band in self.bands:
            initial = torch.randn(shape, generator=generator, device=condition.device)
            out += sample_band(band.model, band.processor, band.cfg, condition, initial, states, generator, tick)
        return out

    def _check_condition(self, condition: torch.Tensor) -> torch.Tensor:
        want = self.cfg.bands[0].codec_dim
        if not isinstance(condition, torch.Tensor) or condition.dim() != 3 or condition.shape[1] != want:
            got = list(condition.shape) if isinstance(condition, torch.Tensor) else type(condition).__name__
            raise ValueError(f"MBD condition must be an EnCodec latent [B, {want}, frames], got {got}")
        if condition.shape[-1] < 1:
            raise ValueError("MBD condition has no frames")
        if not torch.isfinite(condition).all():
            raise ValueError("MBD condition contains NaN or inf")
        return condition.to(self.device)

    @torch.no_grad()
    def equalize(self, wav: torch.Tensor, ref: torch.Tensor, n_bands: int | None = None, strictness: float = 1.0,
                 reference: bool = False) -> torch.Tensor:
        """``re_eq``: scale each of n_bands mel bands of ``wav`` by (std(ref band) / std(wav band)) ** strictness.
        Stds per item and channel; reference=True: over the whole tensor, as audiocraft."""
        import julius

        split = julius.SplitBands(self.cfg.sample_rate, n_bands=n_bands or self.cfg.eq_bands).to(wav.device)
        bands, ref_bands = split(wav.float()), split(ref.float().to(wav.device))
        if reference:
            gain = (ref_bands.flatten(1).std(dim=1) / bands.flatten(1).std(dim=1)).view(-1, 1, 1, 1)
        else:
            gain = ref_bands.std(dim=-1, keepdim=True) / bands.std(dim=-1, keepdim=True).clamp(min=1e-8)
        return (bands * gain ** strictness).sum(dim=0)

    @torch.no_grad()
    def tokens_to_wav(self, codes: torch.Tensor, codec: nn.Module, *, encodec_audio: torch.Tensor | None = None,
                      steps: int | Sequence[int] | None = None, generator: torch.Generator | None = None,
                      on_progress: ProgressFn = None, eq: bool = True) -> torch.Tensor:
        """One channel's codes [B, K, frames] -> audio [B, 1, samples], samples = the EnCodec decoder's.

        codec: transformers' ``EncodecModel`` (MusicGen's ``audio_encoder``); ``encodec_audio`` its decoding
        of the same codes [B, 1, samples] when already at hand (the EQ reference and the length)."""
        rate = int(getattr(codec.config, "sampling_rate", self.cfg.sample_rate))
        if rate != self.cfg.sample_rate:
            raise ValueError(f"MBD models are for {self.cfg.sample_rate} Hz audio; the EnCodec model is {rate} Hz")
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.is_floating_point():
            raise ValueError(f"MBD codes must be an integer tensor [B, codebooks, frames], got "
                             f"{list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        if encodec_audio is None:
            encodec_audio = codec.decode(codes[None], [None]).audio_values
        condition = encodec_latent(codec, codes).float()
        wav = self.generate(condition, encodec_audio.shape[-1], steps=steps, generator=generator,
                            on_progress=on_progress)
        return self.equalize(wav, encodec_audio) if eq else wav


# ----------------------------------------------------------------------------------------------
# the official file: reading (weights-only, omegaconf replaced by inert stand-ins) and checking


class _Pickled:
    """Receives the pickled state of an omegaconf object; no code from the file runs."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _PickledContainer(_Pickled):  # DictConfig, ListConfig: state["_content"]
    pass


class _PickledNode(_Pickled):  # AnyNode, FloatNode, ...: state["_val"]
    pass


class _PickledAny:  # typing.Any, stored as Metadata.ref_type / object_type
    pass


_OMEGACONF_CLASSES = {
    "omegaconf.dictconfig.DictConfig": _PickledContainer,
    "omegaconf.listconfig.ListConfig": _PickledContainer,
    "omegaconf.base.Metadata": _Pickled,
    "omegaconf.base.ContainerMetadata": _Pickled,
    **{f"omegaconf.nodes.{n}": _PickledNode
       for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode")},
}


def _safe_globals() -> list:
    return [(cls, name) for name, cls in _OMEGACONF_CLASSES.items()] + [
        (_PickledAny, "typing.Any"), collections.defaultdict, dict, list, set]


def plain_config(obj: Any) -> Any:
    """An unpickled omegaconf config (or plain containers) -> dicts, lists and scalars."""
    if isinstance(obj, _Pickled):
        state = obj.state[0] if isinstance(obj.state, tuple) else obj.state
        state = state if isinstance(state, dict) else {}
        if isinstance(obj, _PickledContainer):
            return plain_config(state.get("_content"))
        if isinstance(obj, _PickledNode):
            return plain_config(state.get("_val"))
        return None
    if isinstance(obj, dict):
        return {k: plain_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_config(v) for v in obj]
    return obj


def read_mbd_package(path: str | Path) -> dict:
    """The official file's top-level dict, tensors memory-mapped, configs as plain dicts.

    Loaded with torch's weights-only unpickler; omegaconf's DictConfig / nodes / metadata and typing.Any
    are allow-listed as inert stand-ins (``_Pickled``), so omegaconf is not needed and nothing runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MBD checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            pkg = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # UnpicklingError (a global outside the allow-list), a truncated file, ...
        raise ValueError(f"{path}: not a readable MBD checkpoint ({type(e).__name__}: {str(e)[:300]})") from None
    if not isinstance(pkg, dict):
        raise ValueError(f"{path}: an MBD checkpoint is a dict with sample_rate, n_bands and one entry per band; "
                         f"got {type(pkg).__name__}")
    return {k: ({**v, "cfg": plain_config(v["cfg"])} if isinstance(v, dict) and "cfg" in v else v)
            for k, v in pkg.items()}


# audiocraft's constructor defaults, used for fields a file's cfg leaves out (DiffusionUnet / EncoderLayer in
# unet.py, NoiseSchedule and MultiBandProcessor in diffusion_schedule.py)
_CTOR_DEFAULTS = dict(hidden=24, depth=3, growth=2.0, max_channels=10_000, kernel=4, stride=2, res_blocks=1,
                      norm_groups=4, emb_all_layers=False, num_steps=1000, beta_t0=1e-4, beta_t1=0.02, beta_exp=1.0,
                      clip=5.0, rescale=1.0, noise_scale=1.0, processor_bands=8, power_std=1.0, num_samples=10_000)


def band_config_from_cfg(cfg: Any, band: int) -> BandConfig:
    """One band's audiocraft cfg (plain dict: channels, diffusion_unet, schedule, processor) -> BandConfig.
    Refuses what this module does not implement, naming the field."""
    what = f"MBD band {band} cfg"
    if not isinstance(cfg, dict):
        raise ValueError(f"{what}: expected a config mapping, got {type(cfg).__name__}")
    unet, sched, proc = (cfg.get(k) or {} for k in ("diffusion_unet", "schedule", "processor"))
    if cfg.get("model", "unet") != "unet":
        raise ValueError(f"{what}: model={cfg.get('model')!r}; only 'unet' (DiffusionUnet) exists")
    for flag in ("transformer", "bilstm", "cross_attention"):
        if unet.get(flag):
            raise ValueError(f"{what}: diffusion_unet.{flag}=True is not implemented (bottleneck "
                             "transformer / BiLSTM)")
    if unet.get("codec_dim") is None:
        raise ValueError(f"{what}: diffusion_unet.codec_dim is null: an unconditional model cannot decode codes")
    if sched.get("repartition", "power") != "power" or sched.get("n_bands") is not None:
        raise ValueError(f"{what}: only the single-band power schedule exists (schedule.repartition="
                         f"{sched.get('repartition')!r}, schedule.n_bands={sched.get('n_bands')!r})")
    use = bool(proc.get("use", False))
    if use and proc.get("name", "multi_band_processor") != "multi_band_processor":
        raise ValueError(f"{what}: processor.name={proc.get('name')!r}; only 'multi_band_processor' exists")
    if isinstance(proc.get("power_std"), (list, tuple)):
        raise ValueError(f"{what}: a per-band processor.power_std list is not supported")

    def get(section: dict, key: str, field: str | None = None):
        return section.get(key, _CTOR_DEFAULTS[field or key])

    try:
        return BandConfig(
            channels=int(cfg.get("channels", 1)), hidden=int(get(unet, "hidden")), depth=int(get(unet, "depth")),
            growth=float(get(unet, "growth")), max_channels=int(get(unet, "max_channels")),
            kernel=int(get(unet, "kernel")), stride=int(get(unet, "stride")),
            res_blocks=int(get(unet, "res_blocks")), norm_groups=int(get(unet, "norm_groups")),
            emb_all_layers=bool(get(unet, "emb_all_layers")), codec_dim=int(unet["codec_dim"]),
            num_steps=int(get(sched, "num_steps")), beta_t0=float(get(sched, "beta_t0")),
            beta_t1=float(get(sched, "beta_t1")), beta_exp=float(get(sched, "beta_exp")),
            clip=float(get(sched, "clip") or 0.0), rescale=float(get(sched, "rescale")),
            noise_scale=float(get(sched, "noise_scale")), processor=use,
            processor_bands=int(get(proc, "n_bands", "processor_bands")), power_std=float(get(proc, "power_std")),
            num_samples=int(get(proc, "num_samples")),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from None


def band_cfg(band: BandConfig) -> dict:
    """BandConfig -> the audiocraft cfg fields it comes from (what the official file's ``cfg`` holds)."""
    return {
        "model": "unet",
        "channels": band.channels,
        "diffusion_unet": dict(hidden=band.hidden, depth=band.depth, res_blocks=band.res_blocks,
                               norm_groups=band.norm_groups, kernel=band.kernel, stride=band.stride,
                               growth=band.growth, max_channels=band.max_channels, dropout=0.0,
                               emb_all_layers=band.emb_all_layers, bilstm=False, codec_dim=band.codec_dim,
                               transformer=False, cross_attention=False),
        "schedule": dict(repartition="power", beta_t0=band.beta_t0, beta_t1=band.beta_t1, beta_exp=band.beta_exp,
                         num_steps=band.num_steps, variance="beta", clip=band.clip, rescale=band.rescale,
                         n_bands=None, noise_scale=band.noise_scale),
        "processor": dict(name="multi_band_processor", use=band.processor, n_bands=band.processor_bands,
                          num_samples=band.num_samples, power_std=band.power_std),
    }


def official_package(mbd: MultiBandDiffusion) -> dict:
    """The official file's structure for ``mbd`` (cfg as plain dicts); ``torch.save`` it to write one."""
    pkg: dict = {"sample_rate": mbd.cfg.sample_rate, "n_bands": len(mbd.bands)}
    for i, band in enumerate(mbd.bands):
        pkg[i] = {"cfg": band_cfg(band.cfg), "model_state": band.model.state_dict(),
                  "processor_state": band.processor.state_dict()}
    return pkg


def _mismatch(what: str, sd: Any, expected: dict[str, torch.Size]) -> list[str]:
    if not isinstance(sd, dict):
        return [f"{what} is {type(sd).__name__}, not a state dict"]
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [f"{k} (file {list(getattr(v, 'shape', []))}, model {list(expected[k])})"
                 for k, v in sd.items() if k in expected and tuple(getattr(v, "shape", ())) != tuple(expected[k])]
    out = []
    for label, keys, limit in (("missing", missing, 8), ("unexpected", unexpected, 8), ("mis-shaped", misshaped, 4)):
        if keys:
            shown = ", ".join(keys[:limit]) + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")
            out.append(f"{what}: {len(keys)} {label} key(s): {shown}")
    return out


def mbd_from_package(pkg: dict, source: str = "MBD checkpoint", *, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, steps: int = OFFICIAL_STEPS) -> MultiBandDiffusion:
    """Build the band models a package describes and load it strictly: every key of every band's
    ``model_state`` and ``processor_state`` must exist with its shape, and nothing else."""
    for key in ("sample_rate", "n_bands"):
        if key not in pkg:
            raise ValueError(f"{source}: no {key!r} entry; an MBD checkpoint has sample_rate, n_bands and "
                             f"entries 0..n_bands-1 (found: {', '.join(map(repr, list(pkg)[:8]))})")
    n = pkg["n_bands"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{source}: n_bands must be a positive integer, got {n!r}")
    problems = []
    for i in range(n):
        entry = pkg.get(i)
        if not isinstance(entry, dict):
            problems.append(f"band {i}: missing")
            continue
        absent = [k for k in ("cfg", "model_state", "processor_state") if k not in entry]
        if absent:
            problems.append(f"band {i}: no {', '.join(absent)}")
    extra = [k for k in pkg if k not in ("sample_rate", "n_bands") and k not in range(n)]
    if extra:
        problems.append(f"unexpected top-level entries {', '.join(map(repr, extra[:8]))}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    bands = tuple(band_config_from_cfg(pkg[i]["cfg"], i) for i in range(n))
    cfg = MBDConfig(name=str(source), sample_rate=int(pkg["sample_rate"]), bands=bands, steps=steps)
    mbd = MultiBandDiffusion(cfg, empty=True)
    for i, band in enumerate(mbd.bands):
        problems += _mismatch(f"band {i} model_state", pkg[i]["model_state"],
                              {k: v.shape for k, v in band.model.state_dict().items()})
        problems += _mismatch(f"band {i} processor_state", pkg[i]["processor_state"],
                              {k: v.shape for k, v in band.processor.state_dict().items()})
    if problems:
        raise ValueError(f"{source} does not match the MBD model its cfg describes: " + "; ".join(problems))
    for i, band in enumerate(mbd.bands):
        band.model.load_state_dict({k: v.to(dtype) for k, v in pkg[i]["model_state"].items()}, strict=True,
                                   assign=True)
        band.processor.load_state_dict(pkg[i]["processor_state"], strict=True)
    return mbd.eval().requires_grad_(False).to(device)


def find_mbd_file(source: str | Path | None = None, filename: str = OFFICIAL_FILENAME) -> Path:
    """The checkpoint file: a path to it, a directory holding ``filename``, or a Hugging Face repo id found in
    the local cache only (default facebook/multiband-diffusion; never downloads)."""
    source = OFFICIAL_REPO if source is None else str(source)
    p = Path(source).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if (p / filename).is_file():
            return p / filename
        raise FileNotFoundError(f"MBD weights: {p} has no {filename}")
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"MBD weights: {source!r} is neither a file, a directory nor a Hugging Face repo id")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=source, filename=filename, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, OfflineModeIsEnabled, ...
        raise FileNotFoundError(
            f"MBD weights: {filename} of {source!r} is not in the local Hugging Face cache ({type(e).__name__}). "
            f"Download it on a connected machine (`hf download {source} {filename}`) or give a local path."
        ) from None


def load_mbd(source: str | Path | None = None, *, filename: str = OFFICIAL_FILENAME,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             steps: int = OFFICIAL_STEPS) -> MultiBandDiffusion:
    """The official MBD models (``get_mbd_musicgen``) from a file, a directory or the HF cache."""
    path = find_mbd_file(source, filename)
    return mbd_from_package(read_mbd_package(path), str(path), device=device, dtype=dtype, steps=steps)


def mbd_for_decoder(cfg: Any, codec_config: Any, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> MultiBandDiffusion:
    """The MBD models for a MusicGen decoder (an ``M2UGenConfig``): the official file from
    ``cfg.extra["mbd_path"]`` (file, directory or repo id; default facebook/multiband-diffusion in the HF
    cache) when the decoder has real weights or a path is given; the tiny random preset for a random
    (tiny) MusicGen, sized to its EnCodec latent."""
    extra = getattr(cfg, "extra", None) or {}
    if getattr(cfg, "decoder_path", None) is None and "mbd_path" not in extra:
        dim = getattr(codec_config, "codebook_dim", None) or codec_config.hidden_size
        mbd = MultiBandDiffusion.random(MBDConfig.preset("tiny", codec_dim=int(dim)))
        for band in mbd.bands:
            band.model.to(dtype)
        return mbd.to(device)
    return load_mbd(extra.get("mbd_path"), device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# size and cost (docs/model-api.md)


def parameter_count(band: BandConfig) -> int:
    """Weights of one band's UNet, from its config (no model built)."""
    with torch.device("meta"):
        return sum(p.numel() for p in DiffusionUnet(band).parameters())


def unet_macs(band: BandConfig, samples: int) -> int:
    """Multiply-accumulates of one UNet call on ``samples`` samples (convolutions; norms etc. ignored)."""
    macs, chin, length = 0, band.channels, samples
    for width in band.widths():
        length = math.ceil(length / band.stride)
        per_res = 2 * width * width * 3 * band.res_blocks
        # encoder conv + res blocks, decoder res blocks + transposed conv, at the coarser length
        macs += length * (2 * chin * width * band.kernel + 2 * per_res)
        chin = width
    return macs + length * band.codec_dim * chin


__all__ = [
    "BandConfig", "MBDConfig", "MultiBandDiffusion", "DiffusionUnet", "MultiBandProcessor", "SampleProcessor",
    "OFFICIAL_STEPS", "FAST_STEPS", "load_mbd", "find_mbd_file", "read_mbd_package", "mbd_from_package",
    "official_package", "encodec_latent", "step_list", "parameter_count", "unet_macs", "mbd_for_decoder",
]
