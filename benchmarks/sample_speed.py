"""Sampling speed: greedy KV-cache decoding of GPT-2 124M, ours against Hugging Face transformers.

    python benchmarks/sample_speed.py                 # 100 new tokens, 2 threads
    python benchmarks/sample_speed.py --new 50 --threads 1 --rounds 3

A randomly initialised GPT2LMHeadModel(GPT2Config()) (12 layers, 12 heads, 768 wide,
context 1024, vocab 50257) has its weights converted with gpt.hf.state_dict_from_hf into
our GPT, so both are the same function: from the same 16-token prompt, batch 1, greedy
decoding must give the same tokens (printed). Each side runs
    ours: model.generate(idx, N, temperature=0)
    HF:   model.generate(ids, do_sample=False, max_new_tokens=N, min_new_tokens=N)
alternately for --rounds rounds after a short warmup; tokens/s = N / wall time of the
whole call (prefill of the prompt included), best round.

The roofline: decoding one token at batch 1 reads every weight once, so
    tokens/s <= memory bandwidth / bytes of weights.
Bandwidth is measured as copy bandwidth (bytes read + written per second) of a 512 MiB
float32 array, best of 5, with np.copyto (one thread) and with torch's copy_ (--threads
threads); the higher is used. Weight bytes: every parameter once in float32 (the tied
embedding counted once: it is read for the output layer; the position table is included).
"""
import argparse
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--new", type=int, default=100, help="new tokens per generate call")
ap.add_argument("--prompt", type=int, default=16, help="prompt length")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--copy-mib", type=int, default=512, help="array size for the bandwidth measurement")
ARGS = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before numpy/torch are imported
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from gpt.extras import require  # noqa: E402

torch = require("torch", "bench", "benchmarks/sample_speed.py")

torch.set_num_threads(ARGS.threads)
try:
    from threadpoolctl import threadpool_limits
    threadpool_limits(ARGS.threads)
except ImportError:
    pass

from gpt.hf import state_dict_from_hf  # noqa: E402
from gpt.model import GPT, GPTConfig  # noqa: E402


def copy_bandwidth(mib, repeats=5):
    """(numpy GB/s, torch GB/s): best of `repeats` copies, counting bytes read + written."""
    n = mib * 2**20 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros_like(src)
    best_np = best_t = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best_np = min(best_np, time.perf_counter() - t0)
    ts, td = torch.from_numpy(src), torch.from_numpy(dst)
    for _ in range(repeats):
        t0 = time.perf_counter()
        td.copy_(ts)
        best_t = min(best_t, time.perf_counter() - t0)
    nbytes = 2 * src.nbytes
    return nbytes / best_np / 1e9, nbytes / best_t / 1e9


def main():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    hc = hf.config
    cfg = GPTConfig(block_size=hc.n_positions, vocab_size=hc.vocab_size, n_layer=hc.n_layer,
                    n_head=hc.n_head, n_embd=hc.n_embd, dropout=0.0, bias=True)
    ours = GPT(cfg)
    ours.load_state_dict(state_dict_from_hf({k: v.detach().numpy() for k, v in hf.state_dict().items()}))
    ours.eval()
    n_params = sum(p.size for p in ours.parameters())
    print(f"GPT-2 124M shape, random weights: {n_params / 1e6:.2f}M parameters, {ARGS.threads} threads, "
          f"batch 1, prompt {ARGS.prompt}, {ARGS.new} new tokens, greedy")

    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, ARGS.prompt), dtype=np.int64)
    ids = torch.from_numpy(prompt)
    mask = torch.ones_like(ids)

    def run_ours(n):
        return ours.generate(prompt, n, temperature=0)

    def run_hf(n):
        with torch.no_grad():
            return hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                               pad_token_id=hc.eos_token_id).numpy()

    run_ours(4), run_hf(4)  # warmup
    times = {"ours": [], "hf": []}
    out = {}
    for r in range(ARGS.rounds):
        for label, fn in [("ours", run_ours), ("hf", run_hf)][:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            out[label] = fn(ARGS.new)
            times[label].append(time.perf_counter() - t0)
    same = out["ours"].shape == out["hf"].shape and bool((out["ours"] == out["hf"]).all())
    first_diff = "" if same else \
        f" (first difference at new token {int(np.argmax(out['ours'][0, ARGS.prompt:] != out['hf'][0, ARGS.prompt:]))})"
    print(f"token sequences identical: {same}{first_diff}")
    rate = {k: ARGS.new / min(v) for k, v in times.items()}
    print(f"tokens/s per round: ours {[round(ARGS.new / t, 1) for t in times['ours']]}, "
          f"HF {[round(ARGS.new / t, 1) for t in times['hf']]} (load average {os.getloadavg()[0]:.1f})")
    print(f"best: ours {rate['ours']:.1f} tok/s ({1000 / rate['ours']:.1f} ms/token), "
          f"HF {rate['hf']:.1f} tok/s ({1000 / rate['hf']:.1f} ms/token), ratio ours/HF {rate['ours'] / rate['hf']:.2f}")

    bw_np, bw_t = copy_bandwidth(ARGS.copy_mib)
    bw = max(bw_np, bw_t)
    weight_bytes = n_params * 4
    bound = bw * 1e9 / weight_bytes
    print(f"copy bandwidth: np.copyto {bw_np:.1f} GB/s (1 thread), torch copy_ {bw_t:.1f} GB/s "
          f"({ARGS.threads} threads); weights {weight_bytes / 1e6:.0f} MB per token")
    print(f"bandwidth bound {bound:.1f} tok/s ({1000 / bound:.1f} ms/token): "
          f"ours at {rate['ours'] / bound:.0%} of it, HF at {rate['hf'] / bound:.0%}")


if __name__ == "__main__":
    main()
