"""Architecture twins: offline stand-ins for the embedding and reranker models of config/profiles.py.

No model can be downloaded on our machines, so tests and benchmarks use twins: a model
directory with the profile's transformer architecture and config, random (seeded) weights, and
a tokenizer of the same family trained with the `tokenizers` library on Korean text
(twin_corpus_ko.txt beside this file, original sample text). The directory has the layout of
the real hub repositories: for an embedding model a sentence-transformers one (modules.json,
sentence_bert_config.json, 1_Pooling/, 2_Normalize/), so `SentenceTransformer(str(path))` takes
the real loading path; for a reranker a plain transformers sequence-classification one (one
label), which `CrossEncoder(str(path))` loads.

A full-size twin has the real model's speed and memory (its embedding matrix keeps the
profile's vocabulary size even though the trained tokenizer is smaller); its retrieval
quality is meaningless. `small=True` gives a tiny one (2 layers, hidden 64) for unit tests;
its vectors are 64-dimensional, so always take the dimension from the loaded model
(`Encoder.dim`), never from the profile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from config.profiles import PROFILES, RERANKER_PROFILES, ModelProfile, RerankerProfile, TransformerProfile

log = logging.getLogger(__name__)

CORPUS_PATH = Path(__file__).with_name("twin_corpus_ko.txt")
TWIN_INFO = "twin_info.json"
TWIN_FORMAT = 1

# Small twins: enough to exercise every code path at unit-test speed.
SMALL_LAYERS, SMALL_HIDDEN, SMALL_HEADS, SMALL_FFN = 2, 64, 4, 128
SMALL_MAX_POSITIONS = 514  # 512 tokens (+2 for RoBERTa's padding offset); bge's 8192 would only cost memory
TOKENIZER_VOCAB_TARGET = 16000  # the corpus is small: the trainers stop well below this

# Special tokens in id order. XLM-R: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last. KLUE RoBERTa's
# BertTokenizer-style vocab: [CLS]=0 [PAD]=1 [SEP]=2 [UNK]=3 [MASK]=4 (pad id 1 as RoBERTa needs).
# BERT/DeBERTa-style with pad id 0: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
_UNIGRAM_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_WORDPIECE_SPECIALS_PAD1 = ("[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]")
_WORDPIECE_SPECIALS_PAD0 = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def twin_profile(name: str) -> TransformerProfile:
    """The embedding or reranker profile called `name`, or a ValueError listing both tables."""
    profile = PROFILES.get(name) or RERANKER_PROFILES.get(name)
    if profile is None:
        raise ValueError(
            f"unknown profile {name!r}; embedding profiles: {', '.join(PROFILES)}; "
            f"reranker profiles: {', '.join(RERANKER_PROFILES)}"
        )
    return profile


def read_corpus_files(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Lines of user-given UTF-8 text files, for `build_twin(corpus=...)` (the CLI's extra corpus)."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip("\n")


def builtin_corpus() -> list[str]:
    """The bundled Korean sample text, one sentence or paragraph per item (section headers dropped)."""
    text = CORPUS_PATH.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("# ")]


def _ksx1001_hangul() -> list[str]:
    """The 2,350 Hangul syllables of KS X 1001 (EUC-KR): seeded into the alphabet so common
    syllables missing from the small corpus still get a token instead of <unk>."""
    out = []
    for hi in range(0xB0, 0xC9):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes([hi, lo]).decode("euc-kr"))
            except UnicodeDecodeError:
                pass
    return out


def _ascii_alphabet() -> list[str]:
    return [chr(c) for c in range(0x21, 0x7F)]


@lru_cache(maxsize=8)
def _train_tokenizer_json(kind: str, specials: tuple[str, ...], texts: tuple[str, ...]) -> str:
    """Train a tokenizer of `kind` on `texts`; returns tokenizer.json content (cached per input)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    alphabet = _ksx1001_hangul() + _ascii_alphabet()
    trainer: trainers.Trainer
    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=TOKENIZER_VOCAB_TARGET,
            special_tokens=list(specials),
            unk_token="<unk>",
            initial_alphabet=alphabet,
            max_piece_length=8,
            show_progress=False,
        )
        tok.train_from_iterator(list(texts), trainer)
        tok.add_special_tokens(["<mask>"])  # last id, as in XLM-R
        bos, eos = "<s>", "</s>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            pair=f"{bos} $A {eos} {eos} $B {eos}",
            special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        # strip_accents must stay off: accent stripping decomposes Hangul syllables (NFD).
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=TOKENIZER_VOCAB_TARGET,
            special_tokens=list(specials),
            initial_alphabet=alphabet,
            min_frequency=2,
            show_progress=False,
        )
        tok.train_from_iterator(list(texts), trainer)
        cls, sep = "[CLS]", "[SEP]"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    for i, s in enumerate(specials):  # the model config's pad/bos/eos ids rely on this order
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s), i)
    return tok.to_str()


def _specials(profile: TransformerProfile) -> tuple[str, ...]:
    if profile.tokenizer_kind == "unigram":
        return _UNIGRAM_SPECIALS
    return _WORDPIECE_SPECIALS_PAD0 if profile.config.get("pad_token_id", 0) == 0 else _WORDPIECE_SPECIALS_PAD1


def _save_tokenizer(profile: TransformerProfile, tokenizer_json: str, out_dir: Path, max_seq_length: int) -> int:
    """Save as a fast tokenizer that AutoTokenizer loads with the real model's tokenizer class."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tokenizer_json)
    if profile.tokenizer_kind == "unigram":
        fast = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
            model_max_length=max_seq_length,
        )
        tokenizer_class, extra = "XLMRobertaTokenizer", {}
    else:
        fast = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            cls_token="[CLS]",
            sep_token="[SEP]",
            unk_token="[UNK]",
            pad_token="[PAD]",
            mask_token="[MASK]",
            model_max_length=max_seq_length,
        )
        # KLUE RoBERTa and KF-DeBERTa ship BertTokenizer-style WordPiece vocabularies.
        tokenizer_class, extra = "BertTokenizer", {"do_lower_case": False, "strip_accents": False}
    fast.save_pretrained(str(out_dir))
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(tokenizer_class=tokenizer_class, model_max_length=max_seq_length, **extra)
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    # A vocab.txt like the real WordPiece repos carry (tokenizer.json stays authoritative).
    if profile.tokenizer_kind == "wordpiece":
        vocab = backend.get_vocab()
        (out_dir / "vocab.txt").write_text(
            "".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])), encoding="utf-8"
        )
    return backend.get_vocab_size()


def twin_config(profile: TransformerProfile, *, small: bool, tokenizer_vocab: int) -> dict:
    """The transformers config dict of the twin: the profile's, or the small variant of it."""
    cfg = dict(profile.config)
    if tokenizer_vocab > cfg["vocab_size"]:
        raise ValueError(
            f"trained tokenizer has {tokenizer_vocab} tokens, more than {profile.name}'s {cfg['vocab_size']}"
        )
    if small:
        cfg.update(
            hidden_size=SMALL_HIDDEN,
            num_hidden_layers=SMALL_LAYERS,
            num_attention_heads=SMALL_HEADS,
            intermediate_size=SMALL_FFN,
            vocab_size=tokenizer_vocab,
            max_position_embeddings=min(cfg["max_position_embeddings"], SMALL_MAX_POSITIONS),
        )
    cfg["architectures"] = [profile.architecture]
    return cfg


def twin_max_seq_length(profile: TransformerProfile, *, small: bool) -> int:
    """The ST max_seq_length of the twin: the profile's, capped by the small twin's positions."""
    if not small:
        return profile.max_seq_length
    positions = min(profile.config["max_position_embeddings"], SMALL_MAX_POSITIONS)
    offset = 2 if profile.config.get("model_type") in ("roberta", "xlm-roberta") else 0
    return min(profile.max_seq_length, positions - offset)


def _write_st_layout(profile: ModelProfile, out_dir: Path, *, hidden: int, max_seq_length: int) -> None:
    """modules.json and module configs in the layout of the real hub repositories."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if profile.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (out_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2), encoding="utf-8"
    )
    (out_dir / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2),
        encoding="utf-8",
    )
    pooling = out_dir / "1_Pooling"
    pooling.mkdir()
    (pooling / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": profile.pooling == "cls",
                "pooling_mode_mean_tokens": profile.pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": False,
                "include_prompt": True,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    if profile.normalize:
        (out_dir / "2_Normalize").mkdir()


def _make_readable(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def build_twin(
    profile: TransformerProfile,
    out_dir: Path,
    *,
    small: bool = False,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an architecture twin of `profile` to `out_dir` and return the directory.

    `corpus`: extra training texts (lines or paragraphs, see `read_corpus_files`) added to the
    bundled Korean corpus for the tokenizer. The directory is built beside `out_dir` and renamed
    into place, so a crash never leaves a half-written twin; an existing non-empty `out_dir` is
    refused unless `overwrite`.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty")
    texts = tuple(builtin_corpus()) + tuple(t for t in (corpus or ()) if t and t.strip())
    tokenizer_json = _train_tokenizer_json(profile.tokenizer_kind, _specials(profile), texts)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        max_seq_length = twin_max_seq_length(profile, small=small)
        tokenizer_vocab = _save_tokenizer(profile, tokenizer_json, tmp, max_seq_length)
        cfg = twin_config(profile, small=small, tokenizer_vocab=tokenizer_vocab)
        config = AutoConfig.for_model(**cfg)
        reranker = isinstance(profile, RerankerProfile)
        auto_class = AutoModelForSequenceClassification if reranker else AutoModel
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = auto_class.from_config(config)
        model.eval()
        model.save_pretrained(str(tmp))
        del model
        if isinstance(profile, ModelProfile):
            _write_st_layout(profile, tmp, hidden=cfg["hidden_size"], max_seq_length=max_seq_length)
        info = {
            "format": TWIN_FORMAT,
            "kind": "reranker" if reranker else "embedding",
            "profile": profile.name,
            "hub_id": profile.hub_id,
            "small": small,
            "seed": seed,
            "architecture": profile.architecture,
            "dim": cfg["hidden_size"],
            "max_seq_length": max_seq_length,
            "model_vocab_size": cfg["vocab_size"],
            "tokenizer_vocab_size": tokenizer_vocab,
            "corpus_sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
        }
        (tmp / TWIN_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
        _make_readable(tmp)  # mkdtemp (and some savers) create owner-only entries
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built %s twin of %s in %s", "small" if small else "full-size", profile.name, out_dir)
    return out_dir


def read_twin_info(path: Path) -> dict | None:
    """The twin_info.json of a twin directory, or None when `path` is not a twin."""
    try:
        return json.loads((Path(path) / TWIN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_twin(
    profile: TransformerProfile, root: Path = Path(".twins"), *, small: bool = False, seed: int = 0
) -> Path:
    """A cached twin under `root` (built on first use; benchmarks keep full-size ones in ./.twins/)."""
    path = Path(root) / f"{profile.name}{'-small' if small else ''}-seed{seed}"
    info = read_twin_info(path)
    if (
        info
        and info.get("format") == TWIN_FORMAT
        and info.get("profile") == profile.name
        and info.get("small") == small
        and info.get("seed") == seed
    ):
        return path
    return build_twin(profile, path, small=small, seed=seed, overwrite=True)
