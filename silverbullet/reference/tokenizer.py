"""The reference model's tokenizer: byte-level BPE trained on the task, with one token per digit.

Single-digit number tokens make arithmetic a per-digit skill the small model can learn, and make a
quantized model's arithmetic slips visible digit by digit in the token margins. Byte-level BPE
means any text (including a user's question) still tokenizes.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|end|>"
PAD = "<|pad|>"
VOCAB_SIZE = 768


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def to_hf(tok: Tokenizer):
    """Wrap as a transformers fast tokenizer (left padding, as batched generation needs)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_and_save(out_dir: str | Path, n_texts: int = 20_000, seed: int = 0):
    """Train on `n_texts` training-split problems (deterministic) and save next to the model."""
    from silverbullet.benchmarks.synthetic_task import generate

    texts = [p.text for p in generate("train", n_texts, seed=seed)]
    hf = to_hf(train_tokenizer(texts))
    hf.save_pretrained(str(out_dir))
    return hf
