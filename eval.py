"""Perplexity and mean loss of a checkpoint or GPT-2 directory on a text file, with strided windows.

    python eval.py --init_from=out-shakespeare-char-cpu --data_file=play.txt
    python eval.py --init_from=gpt2-dir --data_file=wiki.txt --stride=512

A text longer than the model's context is scored as Hugging Face's perplexity guide does:
windows of max_length tokens (default: block_size) start every `stride` tokens, and each
window scores only the tokens no earlier window scored, so every token after the first is
predicted exactly once, with between max_length - stride and max_length - 1 tokens of
context. The default stride, max_length - 1, overlaps windows by the one token that
conditions the next window's first prediction (fastest); a smaller stride gives each
prediction more context. stride = max_length (as in the guide's disjoint example) leaves
the first token of each window after the first unscored. The mean loss is the total negative log-likelihood over
the number of scored tokens (the guide's own weighting is off by one token per window; this
is the exact mean), and the perplexity is exp(mean loss). Text is tokenized with specials
allowed, as transformers' tokenizers do.

Left out: batching texts of several files, bits per byte, sliding-window generation.
"""
import dataclasses
import math

import numpy as np

from gpt import data as gdata
from gpt.cli import run_main
from gpt.config import DEFAULT_OUT_DIR, ConfigError, option, parse
from gpt.generate import inference_mode
from gpt.hf import load_pretrained
from gpt.tokenizer import TokenizerError


@dataclasses.dataclass
class EvalConfig:
    init_from: str = option(DEFAULT_OUT_DIR, "a run directory, checkpoint file or GPT-2 directory")
    data_file: str = option("", "UTF-8 text file to score")
    max_length: int = option(0, "tokens per window (0: the model's block_size)", valid="[0, inf)")
    stride: int = option(0, "tokens between window starts (0: max_length - 1, each token scored once)",
                         valid="[0, inf)")
    batch_size: int = option(8, "windows per forward pass", valid="[1, inf)")
    max_tokens: int = option(0, "score only the first this many tokens (0: all)", valid="[0, inf)")
    device: str = option("cpu", "'cpu' or 'cuda'", valid=("cpu", "cuda"))

    def __post_init__(self):
        """Constraints between options (gpt.config.build checks each option's own range)."""
        if self.max_length == 1:
            raise ConfigError("max_length=1 scores nothing: use 0 (the model's block_size) or at least 2")
        if self.max_length and self.stride > self.max_length:
            raise ConfigError(f"stride={self.stride} must be <= max_length={self.max_length}")


def strided_windows(n, max_length, stride):
    """[(begin, end, first scored position)] for n tokens: windows [begin, end) of at most max_length
    tokens every `stride`; for stride < max_length they score positions 1..n-1, each once."""
    windows, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        windows.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return windows


def total_nll(model, ids, max_length, stride, batch_size=8):
    """(sum of -log p(token | its window's earlier tokens), number of tokens scored) over ids (N,)."""
    nll, count = 0.0, 0
    windows = strided_windows(len(ids), max_length, stride)
    with inference_mode(model):
        for length in sorted({end - begin for begin, end, _ in windows}):  # equal lengths share a batch
            same = [w for w in windows if w[1] - w[0] == length]
            for i in range(0, len(same), batch_size):
                x, y = _batch(ids, same[i:i + batch_size])
                scored = int((y >= 0).sum())
                nll += model(x, y)[1].item() * scored  # the loss is the mean over scored targets
                count += scored
    return nll, count


def _batch(ids, windows):
    """Inputs and targets (B, L - 1) for windows of one length L; targets before the scored part are -1."""
    x = np.stack([ids[begin:end - 1] for begin, end, _ in windows]).astype(np.int64)
    y = np.stack([ids[begin + 1:end] for begin, end, _ in windows]).astype(np.int64)
    positions = np.array([begin + 1 for begin, _, _ in windows])[:, None] + np.arange(y.shape[1])  # of y's tokens
    first = np.array([scored_from for _, _, scored_from in windows])[:, None]
    return x, np.where(positions >= first, y, -1)


def main(argv):
    cfg = parse(EvalConfig, argv, "eval.py")
    if not cfg.data_file:
        raise ValueError("give the text to score with --data_file=path/to/text.txt")
    model, tokenizer = load_pretrained(cfg.init_from, cfg.device)
    max_length = cfg.max_length or model.config.block_size
    stride = cfg.stride or max_length - 1
    if not 2 <= max_length <= model.config.block_size:
        raise ValueError(f"--max_length={max_length} must be between 2 and the model's block_size "
                         f"{model.config.block_size}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"--stride={stride} must be between 1 and max_length={max_length}")
    try:
        ids = np.asarray(tokenizer.encode(gdata.load_text(data_file=cfg.data_file), allowed_special="all"))
    except TokenizerError as e:
        raise ValueError(f"{cfg.data_file}: {e}") from None
    ids = ids[:cfg.max_tokens] if cfg.max_tokens else ids
    if len(ids) < 2:
        raise ValueError(f"{cfg.data_file} encodes to {len(ids)} token(s); need at least 2 to score one")
    nll, count = total_nll(model, ids, max_length, stride, cfg.batch_size)
    print(f"{cfg.data_file}: {count} tokens scored, windows of {max_length} every {stride}: "
          f"mean loss {nll / count:.4f}, perplexity {math.exp(nll / count):.3f}")


if __name__ == "__main__":
    run_main(main)
