"""Build a GPT-2 directory with random weights and GPT-2's real tokenizer, and print HF's greedy text.

    python scripts/make_random_gpt2.py out-gpt2-random          # GPT-2 small's shape, 124M parameters
    python sample.py --init_from=out-gpt2-random --start="The quick brown fox jumps over the lazy dog." \\
        --temperature=0 --no_repeat_ngram_size=2 --max_new_tokens=50

The real GPT-2 weights cannot be downloaded here, so transformers saves a randomly initialised
GPT2LMHeadModel of GPT-2 small's shape (or --tiny: 2 layers, 64 wide) next to GPT-2's own
vocab.json and merges.txt (from --gpt2_dir: by default where benchmarks/tokenizer.py --fetch
puts them). The script then prints what transformers' `generate` makes of the tutorial prompt,
greedy with no_repeat_ngram_size=2, for comparison with sample.py's output: they must be
equal token for token. With a real gpt2 directory the sample.py command works unchanged.

Needs torch and transformers (a cross-check tool: gpt/ itself never imports them).
"""
import argparse
import os
import shutil

import torch
import transformers

PROMPT = "The quick brown fox jumps over the lazy dog."
CACHE = os.environ.get("NANOGRAD_GPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nanograd-gpt")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="directory to write")
    parser.add_argument("--gpt2_dir", default=os.path.join(CACHE, "gpt2"), help="holds vocab.json and merges.txt")
    parser.add_argument("--tiny", action="store_true", help="2 layers, 64 wide, instead of GPT-2 small")
    parser.add_argument("--max_new_tokens", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=2, n_embd=64) if args.tiny else {}
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**shape)).eval()
    model.save_pretrained(args.out)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(args.gpt2_dir, name), args.out)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(args.out)
    ids = torch.tensor([tokenizer(PROMPT).input_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, no_repeat_ngram_size=2,
                         max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.eos_token_id)
    print(f"wrote {args.out}; transformers' greedy continuation (no_repeat_ngram_size=2):")
    print(tokenizer.decode(out[0]))


if __name__ == "__main__":
    main()
