"""Generate text from a trained checkpoint, streaming it as the tokens arrive.

    python sample.py --out_dir=out --start="ROMEO:" --max_new_tokens=300
    python sample.py --start=FILE:prompt.txt --temperature=0 --no_repeat_ngram_size=2

Options mean what they mean in Hugging Face `generate` (see gpt/generate.py); several
samples are drawn as one batch. Same --seed, same text.

Left out: beam search, interactive chat.
"""
import dataclasses
import sys

import numpy as np

from gpt.checkpoint import load_model
from gpt.cli import run_main
from gpt.config import option, parse

SEPARATOR = "\n---------------\n"


@dataclasses.dataclass
class SampleConfig:
    out_dir: str = option("out", "run directory holding ckpt.safetensors")
    start: str = option("\n", "prompt text, or FILE:path to read it from a file")
    num_samples: int = option(1, "samples to draw (as one batch)")
    max_new_tokens: int = option(500, "tokens to generate per sample")
    temperature: float = option(0.8, "softmax temperature; 0 means greedy")
    top_k: int = option(200, "sample from the k most likely tokens only (0: off)")
    top_p: float = option(1.0, "nucleus sampling: smallest set with this total probability (1: off)")
    repetition_penalty: float = option(1.0, "penalise tokens already present (1: off)")
    no_repeat_ngram_size: int = option(0, "never repeat an n-gram of this size (0: off)")
    seed: int = option(1337, "random seed: the same seed gives the same text")
    device: str = option("cpu", "'cpu' or 'cuda'")


def read_prompt(start):
    if not start.startswith("FILE:"):
        return start
    path = start[len("FILE:"):]
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read prompt file {path}: {e}") from None


class Streamer:
    """Prints sample 0 as its tokens arrive, holding back bytes of an unfinished character."""

    def __init__(self, tokenizer):
        self.tokenizer, self.pending = tokenizer, []

    def __call__(self, column):  # column: (B,) new token ids
        self.pending.append(int(column[0]))
        text = self.tokenizer.decode(self.pending)
        if not text.endswith("\ufffd") or len(self.pending) >= 4:  # a UTF-8 char has <= 4 bytes
            sys.stdout.write(text)
            sys.stdout.flush()
            self.pending = []


def main(argv):
    cfg = parse(SampleConfig, argv, "sample.py")
    model, tokenizer, _ = load_model(cfg.out_dir, cfg.device)
    prompt = read_prompt(cfg.start)
    ids = np.array([tokenizer.encode(prompt)] * cfg.num_samples, dtype=np.int64)
    if ids.shape[1] == 0:
        raise ValueError("the prompt encodes to no tokens: give --start some text")
    stream = Streamer(tokenizer) if cfg.num_samples == 1 else None
    if stream:
        sys.stdout.write(prompt)
    out = model.generate(ids, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None,
                         top_p=cfg.top_p if cfg.top_p < 1 else None, repetition_penalty=cfg.repetition_penalty,
                         no_repeat_ngram_size=cfg.no_repeat_ngram_size, seed=cfg.seed, stream=stream)
    if stream:
        print()
    else:
        print(SEPARATOR.join(tokenizer.decode(row.tolist()) for row in out))


if __name__ == "__main__":
    run_main(main)
