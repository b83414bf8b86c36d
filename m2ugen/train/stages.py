"""What each stage trains and how it is scored: trainable tensors, AdamW groups, the learning-rate
schedule, and the teacher-forced forward with its losses (reference doc §2.2, §5.3, §5.4).

Loss = CE(reply tokens) + mse_weight * MSE(output_projector(h[AUD], emb[AUD]), 10 * T5(caption)),
the MSE only on generation samples (a non-empty music caption). ``h`` is the last LLaMA block's
output before the final norm at the positions whose next token is ``[AUD0..7]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from m2ugen.llama import build_adapters
from m2ugen.train.config import STAGE_MODULES, TrainConfig

MODALITIES = ("audio", "image", "video")
_BRIDGE_OF = {"audio": "mu_mert", "image": "iu_vit", "video": "iu_vivit"}


# ----------------------------------------------------------------------------------------------
# trainable tensors and optimizer groups


def is_trainable(name: str, stage: int, train_gates: bool) -> bool:
    """Our parameter name -> trained in ``stage`` (official get_trainable_params, plus the gates)."""
    if name.startswith("llama."):
        if name.endswith(".attention.gate"):
            return train_gates
        return name == "llama.tok_embeddings.weight" or any(s in name for s in ("norm", "bias", "lora"))
    return name.split(".", 1)[0] in STAGE_MODULES[stage]


def set_trainable(model: nn.Module, tcfg: TrainConfig) -> dict[str, nn.Parameter]:
    """Freeze everything but the stage's tensors; trainable ones become fp32 (as official)."""
    trained = {}
    for name, p in model.named_parameters():
        on = is_trainable(name, tcfg.stage, tcfg.train_gates)
        if on and p.dtype != torch.float32:
            p.data = p.data.float()
        p.requires_grad_(on)
        if on:
            trained[name] = p
    return trained


def _linear_weights(model: nn.Module) -> set[str]:
    """Names of 2-D weight matrices of linear maps (nn.Linear, attention in-projections)."""
    out = set()
    for mname, mod in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(mod, nn.Linear):
            out.add(prefix + "weight")
        elif isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
            out.add(prefix + "in_proj_weight")
    return out


def param_groups(model: nn.Module, trained: dict[str, nn.Parameter], tcfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups. ``matrices``: weight decay only on trained linear weight matrices (not on
    embeddings, prefix_query, query_embs, norms, biases, gates). ``reference`` (official
    add_weight_decay): every tensor with > 1 dims and not named ``*.bias`` decays."""
    linear = _linear_weights(model)
    decay, no_decay = [], []
    for name, p in trained.items():
        if tcfg.weight_decay_on == "reference":
            on = p.dim() > 1 and not name.endswith(".bias")
        else:
            on = name in linear
        (decay if on else no_decay).append(p)
    return [dict(params=decay, weight_decay=tcfg.weight_decay), dict(params=no_decay, weight_decay=0.0)]


def lr_factor(step: int, total: int, tcfg: TrainConfig) -> float:
    """Linear warmup, then half-cosine from lr to min_lr over the remaining steps (util/lr_sched.py)."""
    w = tcfg.warmup_steps
    if step < w:
        return (step + 1) / w
    span = max(1, total - w)
    t = min(1.0, (step - w) / span)
    lr = tcfg.min_lr + (tcfg.lr - tcfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    return lr / tcfg.lr


# ----------------------------------------------------------------------------------------------
# forward


def llama_hidden(llama: nn.Module, tokens: torch.Tensor, adapters: list, grad_checkpointing: bool) -> torch.Tensor:
    """Teacher-forced LLaMA over right-padded rows -> last block output [B, L, dim] (pre-norm).

    Same computation as ``Transformer.forward`` without a cache (right padding needs no key mask:
    causal attention never looks right), with optional per-layer activation checkpointing.
    """
    B, L = tokens.shape
    h = llama.tok_embeddings(tokens)
    freqs = llama.freqs_cis(tokens.device)[:L].unsqueeze(0)  # [1, L, hd/2]
    mask = torch.ones(L, L, dtype=torch.bool, device=tokens.device).tril()[None, None]
    for layer, a in zip(llama.layers, adapters):
        if grad_checkpointing and torch.is_grad_enabled():
            h = checkpoint(layer, h, freqs, mask, 0, a, use_reentrant=False)
        else:
            h = layer(h, freqs, mask, 0, a)
    return h


def aud_positions(labels: torch.Tensor, gen_rows: list[int], aud_ids: list[int], mode: str,
                  files: list[str]) -> list[tuple[int, int]]:
    """(row, s) per generation sample: h[row, s:s+8] predicts [AUD0..7] (s indexes shifted labels).

    ``per_row``: the first complete [AUD0..7] run of each generation row. ``reference``: the
    official loop over every [AUD0] occurrence using the enumeration index as the row.
    """
    shifted = labels[:, 1:]
    n = len(aud_ids)
    if mode == "reference":
        occ = (shifted == aud_ids[0]).nonzero(as_tuple=False).tolist()
        return [(i, s) for i, (_, s) in enumerate(occ)]
    want = torch.tensor(aud_ids, device=labels.device)
    out = []
    for r in gen_rows:
        starts = (shifted[r] == aud_ids[0]).nonzero(as_tuple=True)[0].tolist()
        found = [s for s in starts if s + n <= shifted.shape[1] and torch.equal(shifted[r, s:s + n], want)]
        if not found:
            raise ValueError(f"{files[r]}: generation sample without a complete [AUD0..7] run in its labels")
        out.append((r, found[0]))
    return out


class StageModel(nn.Module):
    """The model plus its training forward; what accelerate wraps (DDP/FSDP) and calls."""

    def __init__(self, model: nn.Module, tcfg: TrainConfig):
        super().__init__()
        self.m2ugen = model
        self.tcfg = tcfg

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, L]
        labels: torch.Tensor,  # [B, L], 0 = ignored
        feats: dict[str, tuple[torch.Tensor, torch.Tensor]],  # modality -> (rows [n], encoder out [n, T, D])
        gen_rows: list[int],
        targets: torch.Tensor | None,  # [n_gen, Nq, out_dim] (already scaled)
        files: list[str],
        n_tokens: float,  # CE normaliser: target tokens (of the global batch for loss_norm="global")
        n_gen: float,  # MSE normaliser: generation samples (idem)
        world: int = 1,
    ) -> dict[str, torch.Tensor]:
        m, t = self.m2ugen, self.tcfg
        B = input_ids.shape[0]
        dim = m.cfg.dim
        bridged: dict[str, torch.Tensor] = {}
        for mod, (rows, x) in feats.items():
            out = getattr(m, _BRIDGE_OF[mod])(x)  # [n, 1, dim]
            full = out.new_zeros(B, 1, dim)
            bridged[mod] = full.index_copy(0, rows, out)  # zeros elsewhere: adapter = prefix_query alone
        # prefix_query through its module call (not .weight), so ZeRO-3 / FSDP gather it first
        rows = torch.arange(m.prefix_query.num_embeddings, device=input_ids.device)
        adapters = build_adapters(m.cfg, m.prefix_query(rows).float(), bridged.get("audio"), bridged.get("image"),
                                  bridged.get("video"))
        h = llama_hidden(m.llama, input_ids, adapters, t.grad_checkpointing)
        logits = m.llama.output(m.llama.norm(h)).float()

        flat_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        flat_labels = labels[:, 1:].reshape(-1)
        if t.loss_norm == "reference":
            if (flat_labels != 0).any():
                ce = F.cross_entropy(flat_logits, flat_labels, ignore_index=0)
            else:
                ce = logits.mean() * 0
        else:
            ce = F.cross_entropy(flat_logits, flat_labels, ignore_index=0, reduction="sum") * (world / max(n_tokens, 1.0))

        mse = logits.new_zeros(())
        if gen_rows:
            pos = aud_positions(labels, gen_rows, m.audio_token_ids, t.aud_search, files)
            n_aud = len(m.audio_token_ids)
            hid = torch.stack([h[r, s:s + n_aud] for r, s in pos])
            emb = m.llama.tok_embeddings(torch.stack([labels[r, 1 + s:1 + s + n_aud] for r, s in pos]))
            pred = m.output_projector(hid, emb).float()
            if t.loss_norm == "reference":
                mse = F.mse_loss(pred, targets)
            else:
                per_row = (pred - targets).pow(2).flatten(1).mean(1)
                mse = per_row.sum() * (world / max(n_gen, 1.0))
        loss = ce + t.mse_weight * mse
        logged_ce = ce.detach() + (100.0 if (t.penalty_100 and gen_rows) else 0.0)
        return dict(loss=loss, ce=logged_ce, mse=mse.detach())


# ----------------------------------------------------------------------------------------------
# inputs computed outside the graph: frozen encoders and decoder text embeddings


@torch.no_grad()
def encode_rows(model, batch, device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Frozen encoder outputs per modality from the cached features or the decoded media."""
    from m2ugen.train.features import encode_media

    feats: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    for r, mod in enumerate(batch.modality):
        if mod not in MODALITIES:
            continue
        x = batch.feats[r]
        if x is None:
            x = encode_media(model, mod, batch.media[r])
        rows, xs = feats.setdefault(mod, ([], []))
        rows.append(r)
        xs.append(x.float())
    return {mod: (torch.tensor(rows, device=device), torch.stack(xs).to(device).clone())
            for mod, (rows, xs) in feats.items()}


@torch.no_grad()
def caption_targets(model, captions: list[str], scale: float) -> torch.Tensor:
    """scale x the decoder's text embedding of the captions, cut to the projector's Nq tokens.

    MusicGen: T5 last_hidden_state padded to 128 tokens [n, 128, 768]. AudioLDM2: flatten(T5 [128,
    1024]) ++ flatten(GPT-2 generated [8, 768]) as one token [n, 1, 137216].
    """
    dec = model.decoder
    nq, out_dim = model.cfg.num_output_tokens, model.cfg.output_dim
    if hasattr(dec, "text_embedding"):
        emb = dec.text_embedding(list(captions)).clone()
    else:
        emb = _audioldm2_targets(dec, list(captions))
    if emb.shape[1] < nq or emb.shape[2] != out_dim:
        raise ValueError(f"decoder text embedding {list(emb.shape)} does not fit the projector [{nq}, {out_dim}]")
    return (emb[:, :nq] * scale).float().to(model.device)


def _audioldm2_targets(dec, captions: list[str]) -> torch.Tensor:
    n_t5, d_t5, n_gpt, d_gpt = dec.embed_split
    pipe = dec.pipe
    with torch.inference_mode():
        t5, _, gpt = pipe.encode_prompt(captions, dec.device, 1, False)
    t5 = t5.float()[:, :n_t5]
    if t5.shape[1] < n_t5:  # the official pipeline pads T5 to max_length
        t5 = F.pad(t5, (0, 0, 0, n_t5 - t5.shape[1]))
    flat = torch.cat([t5.reshape(len(captions), -1), gpt.float()[:, :n_gpt].reshape(len(captions), -1)], dim=1)
    return flat.unsqueeze(1).clone()
