"""Generate text from a trained checkpoint or a GPT-2 directory, streaming it as the tokens arrive.

    python sample.py --start="ROMEO:" --max_new_tokens=300    # the run `python train.py` wrote
    python sample.py --start=FILE:prompt.txt --temperature=0 --no_repeat_ngram_size=2
    python sample.py --init_from=gpt2-dir --start="The quick brown fox" --num_beams=4 --num_return_sequences=2

Options mean what they mean in Hugging Face `generate` (see gpt/generate.py); several
samples are drawn as one batch. Same --seed, same text. Generation stops at the
tokenizer's <|endoftext|>, as transformers' does. Beam search prints its sequences at the end.

Left out: chat (chat.py talks with a chat model).
"""
import dataclasses
import sys

import numpy as np

from gpt.cli import run_main
from gpt.config import DEFAULT_OUT_DIR, ConfigError, option, parse
from gpt.hf import load_pretrained
from gpt.tokenizer.stream import TextStream

SEPARATOR = "\n---------------\n"


@dataclasses.dataclass
class SamplingConfig:
    """The options every generating script shares (chat.py too): which model, how tokens are drawn."""
    out_dir: str = option(DEFAULT_OUT_DIR, "run directory holding ckpt.safetensors")
    init_from: str = option("resume", "'resume' (the checkpoint in out_dir), a checkpoint, or a GPT-2 directory")
    max_new_tokens: int = option(500, "tokens to generate per sample", valid="[0, inf)")
    temperature: float = option(0.8, "softmax temperature; 0 means greedy", valid="[0, inf)")
    top_k: int = option(200, "sample from the k most likely tokens only (0: off)", valid="[0, inf)")
    top_p: float = option(1.0, "nucleus sampling: smallest set with this total probability (1: off)",
                          valid="[0, 1]")
    seed: int = option(1337, "random seed: the same seed gives the same text", valid="[0, inf)")
    device: str = option("cpu", "'cpu' or 'cuda'", valid=("cpu", "cuda"))

    def model_path(self):
        """The checkpoint (file or run directory) or GPT-2 directory that init_from and out_dir name."""
        return self.out_dir if self.init_from == "resume" else self.init_from

    def sampling(self):
        """generate's temperature, top_k, top_p and seed (0 and 1 mean off here, None there)."""
        return dict(temperature=self.temperature, top_k=self.top_k or None,
                    top_p=self.top_p if self.top_p < 1 else None, seed=self.seed)


@dataclasses.dataclass
class SampleConfig(SamplingConfig):
    start: str = option("\n", "prompt text, or FILE:path to read it from a file")
    num_samples: int = option(1, "samples to draw (as one batch)", valid="[1, inf)")
    repetition_penalty: float = option(1.0, "penalise tokens already present (1: off)", valid="(0, inf)")
    no_repeat_ngram_size: int = option(0, "never repeat an n-gram of this size (0: off)", valid="[0, inf)")
    num_beams: int = option(1, "beam search with this many beams (1: off); deterministic, ignores sampling",
                            valid="[1, inf)")
    length_penalty: float = option(1.0, "beam score = sum of log-probs / new tokens ** length_penalty",
                                   valid="(-inf, inf)")
    early_stopping: str = option("false", "beam search: 'true', 'false' or 'never', as Hugging Face",
                                 valid=("true", "false", "never"))
    num_return_sequences: int = option(1, "beam search: how many of the best beams to print", valid="[1, inf)")

    def __post_init__(self):
        """Constraints between options (gpt.config.build checks each option's own range)."""
        if self.num_beams > 1 and self.num_samples > 1:
            raise ConfigError("num_samples draws samples; with num_beams use num_return_sequences")
        if self.num_return_sequences > self.num_beams:
            raise ConfigError(f"num_return_sequences={self.num_return_sequences} must be <= num_beams={self.num_beams}")


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
        self.text = TextStream(tokenizer)

    def __call__(self, column):  # column: (B,) new token ids
        write(self.text.push([int(column[0])]))

    def close(self):
        """Print what is held back at the end (an unfinished character)."""
        write(self.text.flush())


def write(text):
    """Print `text` at once, without a newline (a stream's next piece)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def main(argv):
    cfg = parse(SampleConfig, argv, "sample.py")
    model, tokenizer = load_pretrained(cfg.model_path(), cfg.device)
    early_stopping = {"true": True, "false": False, "never": "never"}[cfg.early_stopping]
    prompt = read_prompt(cfg.start)
    ids = np.array([tokenizer.encode(prompt)] * cfg.num_samples, dtype=np.int64)
    if ids.shape[1] == 0:
        raise ValueError("the prompt encodes to no tokens: give --start some text")
    stream = Streamer(tokenizer) if cfg.num_samples == 1 and cfg.num_beams == 1 else None
    if stream:
        sys.stdout.write(prompt)
    out = model.generate(ids, cfg.max_new_tokens, **cfg.sampling(), repetition_penalty=cfg.repetition_penalty,
                         no_repeat_ngram_size=cfg.no_repeat_ngram_size, stream=stream,
                         eos_token_id=tokenizer.eot_token, num_beams=cfg.num_beams, length_penalty=cfg.length_penalty,
                         early_stopping=early_stopping, num_return_sequences=cfg.num_return_sequences)
    if stream:
        stream.close()
        print()
    else:
        print(SEPARATOR.join(tokenizer.decode(row.tolist()) for row in out))


if __name__ == "__main__":
    run_main(main)
