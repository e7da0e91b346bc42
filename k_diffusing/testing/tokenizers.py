"""Offline tokenizers for tiny test pipelines: a byte-level CLIP BPE with no merges and a small T5 Unigram.

Neither needs the model hub. Both produce valid token ids for any text (the CLIP one splits every word into its
bytes; the T5 one falls back to ``<unk>`` for pieces it does not know), which is all a tiny random text encoder needs.
"""

from __future__ import annotations

import json
import pathlib
import string
import tempfile

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"


def byte_level_alphabet() -> list[str]:
    """The 256 characters GPT-2/CLIP byte-level BPE uses for the bytes 0..255, in byte order.

    Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; every other byte b is shifted to
    the code point 256 + (its rank among the non-printable bytes), so that no byte maps to whitespace or a control
    character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    keep = set(printable)
    alphabet, shifted = [], 0
    for b in range(256):
        if b in keep:
            alphabet.append(chr(b))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


def clip_vocab(merges=()) -> dict[str, int]:
    """``vocab.json`` content: 256 byte characters, the same with ``</w>``, then BOS and EOS (514 entries), then the
    symbol each of ``merges`` makes."""
    alphabet = byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + [CLIP_BOS, CLIP_EOS]
    tokens += list(dict.fromkeys(a + b for a, b in merges))
    return {token: i for i, token in enumerate(tokens)}


def apply_merges(symbols: list[str], ranks: dict) -> list[str]:
    """Byte-pair encoding of one word (Sennrich et al. 2016, arXiv:1508.07909): merge the best-ranked adjacent pair,
    every occurrence at once, until no ranked pair is left."""
    while len(symbols) > 1:
        rank, pair = min((ranks.get(pair, float("inf")), pair) for pair in zip(symbols, symbols[1:]))
        if rank == float("inf"):
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def word_merges(words) -> list[tuple[str, str]]:
    """BPE merges, in rank order, that make each of ``words`` (lower-case ASCII) one token.

    Each word is encoded with the merges so far and, while it is still in pieces, gets one more merge (of its first
    two pieces) at the lowest priority. A merge added last never fires before the merges a word already finished
    with, so adding words never splits the earlier ones again.
    """
    merges, ranks = [], {}
    for word in dict.fromkeys(words):
        while len(pieces := apply_merges([*word[:-1], word[-1] + "</w>"], ranks)) > 1:
            ranks[(pieces[0], pieces[1])] = len(merges)
            merges.append((pieces[0], pieces[1]))
    return merges


def write_clip_tokenizer_files(directory, words=()) -> pathlib.Path:
    """Write ``vocab.json`` and ``merges.txt`` (the merges of :func:`word_merges`) into ``directory``; return it."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = word_merges(words)
    (directory / "vocab.json").write_text(json.dumps(clip_vocab(merges), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def clip_tokenizer(directory=None, model_max_length: int = 77, words=()):
    """A ``transformers.CLIPTokenizer`` over the byte-level alphabet, built from files.

    Without ``words`` there are no merges: every word is split into its bytes. ``words`` (lower-case ASCII) get BPE
    merges that make each of them a single token, so a tiny text encoder sees a closed vocabulary word by word.
    The files are written into ``directory`` (kept) or into a temporary directory (removed after loading; the
    tokenizer lives in memory). Ids: bytes 0..511, ``<|startoftext|>`` 512, ``<|endoftext|>`` 513 (also pad and
    unk), then the merged symbols; ``len(tokenizer) == 514`` without ``words``.
    """
    from transformers import CLIPTokenizer

    if directory is not None:
        return CLIPTokenizer.from_pretrained(
            str(write_clip_tokenizer_files(directory, words)), model_max_length=model_max_length
        )
    with tempfile.TemporaryDirectory(prefix="kd_clip_tok_") as tmp:
        return CLIPTokenizer.from_pretrained(
            str(write_clip_tokenizer_files(tmp, words)), model_max_length=model_max_length
        )


T5_WORDS = (
    "a", "an", "the", "of", "and", "in", "on", "with", "to", "photo", "painting", "picture", "cat", "dog", "bird",
    "tree", "house", "city", "car", "man", "woman", "red", "green", "blue", "white", "black", "big", "small",
    "astronaut", "horse", "riding", "mountain", "sea", "sky", "sun", "forest",
)  # fmt: skip


def t5_vocab() -> list[tuple[str, float]]:
    """A small Unigram vocabulary: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``▁`` 3, then whole words (with the
    ``▁`` word-start marker), then single characters with and without the marker (letters, digits, punctuation).

    Scores are log-probabilities: words score higher than the characters that spell them, so known words stay
    whole and anything else is spelled out character by character.
    """
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.5)]
    vocab += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(T5_WORDS)]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,!?'-:;()"
    vocab += [("▁" + c, -8.0) for c in chars]
    vocab += [(c, -9.0) for c in chars]
    return vocab


def t5_tokenizer(model_max_length: int = 512):
    """A ``transformers.T5TokenizerFast`` (Unigram) over :func:`t5_vocab`, no sentinel ``<extra_id_*>`` tokens.

    Ids: pad 0, eos 1, unk 2; every sequence ends with ``</s>``.
    """
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=t5_vocab(), extra_ids=0, model_max_length=model_max_length)
