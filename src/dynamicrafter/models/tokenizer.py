"""The CLIP byte-pair-encoding tokenizer, as OpenCLIP applies it (works offline; the vocabulary ships with the
package in ``assets/bpe_simple_vocab_16e6.txt.gz``).

``tokenize(["a cat"])`` -> (1, 77) int64: ``<start_of_text>``, the BPE ids, ``<end_of_text>``, zero padding. Text
longer than the context is truncated and its last token is forced to ``<end_of_text>``.
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from importlib import resources

import ftfy
import regex as re
import torch

from dynamicrafter.config import TEXT_CONTEXT_LEN

START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
NUM_MERGES = 49152 - 256 - 2  # merges used by CLIP: vocabulary of 49408 = 2*256 bytes + merges + 2 special tokens
TOKEN_PATTERN = re.compile(
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE
)


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """Reversible map from bytes to printable unicode characters (GPT-2 / CLIP convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def _clean(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class CLIPTokenizer:
    """Byte-level BPE over lower-cased, whitespace-normalized text (ids identical to OpenCLIP's tokenizer)."""

    def __init__(self, context_length: int = TEXT_CONTEXT_LEN):
        self.context_length = context_length
        self.byte_encoder = _bytes_to_unicode()
        vocab_file = resources.files("dynamicrafter") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
        with vocab_file.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : NUM_MERGES + 1]  # first line is a version header
        merges = [tuple(line.split()) for line in lines]
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.sot_id = self.encoder[START_OF_TEXT]
        self.eot_id = self.encoder[END_OF_TEXT]
        self._cache: dict[str, list[str]] = {START_OF_TEXT: [START_OF_TEXT], END_OF_TEXT: [END_OF_TEXT]}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, token: str) -> list[str]:
        if token in self._cache:
            return self._cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Text -> BPE ids (no special tokens)."""
        ids: list[int] = []
        for token in TOKEN_PATTERN.findall(_clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(token))
        return ids

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        """Texts -> (n, context_length) int64 token ids, padded with 0."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@lru_cache(maxsize=1)
def get_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()
