"""The LLaMA tokenizer with M2UGen's eight ``[AUD0]..[AUD7]`` tokens.

Real model: Meta's ``tokenizer.model`` loaded by the slow-compatible ``transformers.LlamaTokenizer``
(from its directory: in transformers v5 a ``vocab_file=`` argument is silently ignored), BOS added,
then ``add_tokens([AUD0..7])`` as the official code does, checked to give ids 32000..32007.

Tiny preset: a SentencePiece BPE model of the same kind as LLaMA's (byte fallback, no whitespace
folding, identity normalisation, unk 0 / bos 1 / eos 2) trained deterministically from
``m2ugen/assets/tiny_corpus.txt`` into a cache directory and reused from there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from m2ugen.config import AUDIO_TOKENS
from m2ugen.paths import tokenizer_cache_dir

ASSETS = Path(__file__).resolve().parent / "assets"
TINY_CORPUS = ASSETS / "tiny_corpus.txt"
TINY_VOCAB = 512
REAL_BASE_VOCAB = 32000


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def add_audio_tokens(tok, expect_first: int | None = None):
    """Add [AUD0..7] as regular tokens; check each encodes to one id (consecutive from ``expect_first``)."""
    tok.add_tokens(list(AUDIO_TOKENS))
    ids = []
    for t in AUDIO_TOKENS:
        enc = tok(t, add_special_tokens=False).input_ids
        if len(enc) != 1:
            raise ValueError(f"{t} does not encode to a single id (got {enc})")
        ids.append(enc[0])
    first = ids[0] if expect_first is None else expect_first
    if ids != list(range(first, first + len(AUDIO_TOKENS))):
        raise ValueError(f"[AUD] tokens got ids {ids}, expected {first}..{first + len(AUDIO_TOKENS) - 1}")
    return tok


def audio_token_ids(tok) -> list[int]:
    return tok.convert_tokens_to_ids(list(AUDIO_TOKENS))


def trained_sentencepiece_dir(corpus: Path, kind: str, model_file: str, **options) -> Path:
    """A directory holding ``model_file``: a SentencePiece model trained on the non-empty lines of
    ``corpus`` with ``options`` on first use (single-threaded and unshuffled, so deterministic).

    Cached under ``m2ugen.paths.tokenizer_cache_dir()``, keyed by the corpus
    and the options, and published by renaming a finished directory, so parallel processes can
    share the cache and never see half a model.
    """
    import sentencepiece as spm

    text = corpus.read_text(encoding="utf-8")
    key = hashlib.sha256(repr((sorted(options.items()), text)).encode()).hexdigest()[:16]
    root = tokenizer_cache_dir()
    out = root / f"{kind}-{key}"
    if (out / model_file).is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=root))
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([line for line in text.splitlines() if line.strip()]),
            model_prefix=str(work / "trained"),
            num_threads=1,
            shuffle_input_sentence=False,
            minloglevel=2,
            **options,
        )
        staged = work / "dir"
        staged.mkdir()
        os.replace(work / "trained.model", staged / model_file)
        try:
            os.replace(staged, out)  # atomic publish of the whole directory
        except OSError:  # another process published first
            if not (out / model_file).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def tiny_tokenizer_dir(corpus: Path = TINY_CORPUS, vocab_size: int = TINY_VOCAB) -> Path:
    """Directory holding the tiny LLaMA-kind ``tokenizer.model`` (trained on first use, then cached)."""
    return trained_sentencepiece_dir(
        corpus, "tiny", "tokenizer.model",
        vocab_size=vocab_size, hard_vocab_limit=False, model_type="bpe", byte_fallback=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    )


def load_tokenizer(cfg):
    """The model's tokenizer: real LLaMA (``cfg.tokenizer_path``) or the tiny one; [AUD0..7] added."""
    tf = _quiet_transformers()
    if cfg.tokenizer_path is None:
        tok = tf.LlamaTokenizer.from_pretrained(str(tiny_tokenizer_dir()), add_bos_token=True)
        return add_audio_tokens(tok)
    path = Path(cfg.tokenizer_path).expanduser()
    if path.is_file():
        path = path.parent
    if not (path / "tokenizer.model").is_file():
        raise ValueError(f"tokenizer_path {cfg.tokenizer_path!r}: no tokenizer.model found there")
    tok = tf.LlamaTokenizer.from_pretrained(str(path), add_bos_token=True)
    base = len(tok)
    if base != REAL_BASE_VOCAB:
        raise ValueError(f"{path / 'tokenizer.model'} has {base} tokens, LLaMA-2 has {REAL_BASE_VOCAB}")
    return add_audio_tokens(tok, expect_first=REAL_BASE_VOCAB)
