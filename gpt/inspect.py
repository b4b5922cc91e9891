"""Look inside a trained GPT from the command line: attention maps, logit lens, ablation, induction,
the Fourier view of a modular-arithmetic model, and any run's metrics over training.

    python -m gpt.inspect attention  --prompt="ROMEO: Is it so?" [--image=attn.png]
    python -m gpt.inspect logit-lens --prompt="ROMEO: Is it so?" --top_k=3
    python -m gpt.inspect ablate     --mode=mean [--image=ablate.png]
    python -m gpt.inspect induction  [--image=induction.png]
    python -m gpt.inspect circuit    --out_dir=out-induction [--image=circuit.png]   # writes circuit.json
    python -m gpt.inspect fourier    --out_dir=out-grokking [--image=fourier.png]
    python -m gpt.inspect plot-metrics                  # every logged metric vs iteration
    python -m gpt.inspect plot-metrics --out_dir=out-grokking,out-grokking-wd0   # runs side by side
    python -m gpt.inspect induction  --init_from=path/to/gpt2   # a Hugging Face GPT-2 directory

The run inspected is --out_dir (default: the folder `python train.py` writes). Each command
prints a text view; `--image` also draws a PNG with matplotlib (the optional `plot` extra),
which plot-metrics always needs. A bare file name goes into the run folder (attn.png ->
out_dir/attn.png; the first run folder for plot-metrics); a path with a folder in it is used
as written. The analyses live in gpt/interp.py and gpt/fourier.py; this file only loads
models and data and formats what comes back.

Left out: interactive views, activation patching between two prompts (see interp.py).
"""
import dataclasses
import io
import json
import os
import tempfile

import numpy as np

from gpt import data as gdata
from gpt.generate import inference_mode
from gpt import fourier as gfourier
from gpt import interp
from gpt.cli import run_main
from gpt.config import DEFAULT_OUT_DIR, ConfigError, option, parse
from gpt.extras import require
from gpt.rundir import check_writable
from gpt.safetensors import write_file, write_json
from nanograd import backend

COMMANDS = {  # name -> what it shows, for --help
    "attention": "each head's attention pattern over --prompt (text; --image draws the heat maps)",
    "logit-lens": "the top --top_k next-token guesses after every layer, at the last --positions positions",
    "ablate": "the validation loss with each head zeroed or mean-ablated (--mode)",
    "induction": "every head's induction and previous-token score on repeated random tokens",
    "circuit": "the induction circuit: its heads, their ablation and K-composition (writes circuit.json)",
    "fourier": "the key frequencies of a modular-arithmetic model's embedding (grokking runs)",
    "plot-metrics": "every logged metric of one or more runs against the iteration (a PNG)",
}
MAX_TEXT_TOKENS = 40  # the text attention view shows at most this many (the last) tokens


@dataclasses.dataclass
class InspectConfig:
    out_dir: str = option(DEFAULT_OUT_DIR, "run directory with ckpt.safetensors, token files and metrics.jsonl "
                                           "(plot-metrics: several, comma-separated, drawn together)")
    init_from: str = option("", "a Hugging Face GPT-2 directory to inspect instead of out_dir's checkpoint")
    prompt: str = option("ROMEO:\nIs it so? Then ROMEO:\nIs it", "text for attention and logit-lens")
    layer: int = option(-1, "attention: the one layer to show (-1: all)", valid="[-1, inf)")
    top_k: int = option(3, "logit-lens: predictions per stage", valid="[1, inf)")
    positions: int = option(6, "logit-lens: show the last this many positions (0: all)", valid="[0, inf)")
    mode: str = option("zero", "ablate: replace a head's output by 'zero' or by its 'mean'", valid=("zero", "mean"))
    batches: int = option(4, "ablate: validation batches to average the loss over", valid="[1, inf)")
    batch_size: int = option(8, "ablate and induction: sequences per batch", valid="[1, inf)")
    data_file: str = option("", "ablate: text to measure the loss on (default: out_dir's val split; "
                                "Shakespeare with --init_from)")
    repeat_len: int = option(0, "induction: random tokens before they repeat (0: min(32, block_size / 2))",
                             valid="[0, inf)")
    image: str = option("", "also draw a PNG (matplotlib): a bare name goes into out_dir, a path is used as "
                            "written; plot-metrics defaults to out_dir/emergence.png")
    seed: int = option(0, "seed for validation batches and random tokens", valid="[0, inf)")
    device: str = option("cpu", "'cpu' or 'cuda'", valid=("cpu", "cuda"))


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS)) + 2
        print("commands:\n" + "\n".join(f"  {name:<{width}}{what}" for name, what in COMMANDS.items()) + "\n")
        parse(InspectConfig, ["--help"], "-m gpt.inspect COMMAND")
    command, cfg = argv[0], parse(InspectConfig, argv[1:], f"-m gpt.inspect {argv[0]}")
    image = cfg.image  # as given
    if cfg.image and not os.path.dirname(cfg.image) and not cfg.init_from:
        cfg.image = os.path.join(cfg.out_dir.split(",")[0], cfg.image)  # a bare name: the PNG belongs with its run
    if cfg.image and (cfg.image == image or os.path.isdir(os.path.dirname(os.path.abspath(cfg.image)))):
        check_writable(cfg.image, "--image", folder=False)  # now, not after the work (a missing run folder: load's)
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}: use one of {', '.join(COMMANDS)}")
    if command == "plot-metrics":
        return plot_metrics(cfg)
    if command == "fourier":
        return fourier(cfg)
    model, tokenizer = load(cfg)
    {"attention": attention, "logit-lens": logit_lens, "ablate": ablate, "induction": induction,
     "circuit": circuit}[command](cfg, model, tokenizer)


def load(cfg):
    """(model in eval mode, tokenizer) from --init_from (HF GPT-2 directory) or out_dir's checkpoint."""
    if cfg.init_from:
        from gpt import hf
        return hf.load(cfg.init_from, cfg.device)
    from gpt.checkpoint import load_model
    model, tokenizer, _ = load_model(cfg.out_dir, cfg.device)
    return model, tokenizer


def prompt_ids(cfg, model, tokenizer):
    """The prompt's token ids (T,), cut to the model's last block_size tokens."""
    ids = np.asarray(tokenizer.encode(cfg.prompt))[-model.config.block_size:]
    if ids.size == 0:
        raise ValueError("--prompt is empty: give some text to look at")
    return ids


# ---- attention --------------------------------------------------------------------------
def attention(cfg, model, tokenizer):
    """Print each head's pattern on the prompt as a text heatmap; optionally a PNG grid."""
    layers = range(model.config.n_layer) if cfg.layer == -1 else [cfg.layer]
    if any(not 0 <= i < model.config.n_layer for i in layers):
        raise ValueError(f"--layer={cfg.layer}: the model has layers 0 to {model.config.n_layer - 1} (-1: all)")
    ids = prompt_ids(cfg, model, tokenizer)
    names = [f"blocks.{i}.attn.pattern" for i in layers]
    with inference_mode(model):
        _, cache = model.run_with_cache(ids[None], names)
    patterns = [backend.to_device(cache[n][0], "cpu") for n in names]  # each (H, T, T)
    shown = slice(-MAX_TEXT_TOKENS, None)
    labels = [interp.token_label(tokenizer, t, 8) for t in ids[shown]]
    columns = [(label or " ")[0] for label in labels]
    for layer, p in zip(layers, patterns):
        print(f"layer {layer}: attention from each token (rows) to earlier ones (columns), darker = more")
        heads = [p[h][shown, shown] for h in range(p.shape[0])]
        print(interp.heatmap_text(heads, labels, columns, [f"head {h}" for h in range(p.shape[0])]) + "\n")
    if len(ids) > MAX_TEXT_TOKENS:
        print(f"(text view: the last {MAX_TEXT_TOKENS} of {len(ids)} tokens; the PNG shows all)")
    if cfg.image:
        attention_png([interp.token_label(tokenizer, t, 8) for t in ids], layers, patterns, cfg.image)


def attention_png(labels, layers, patterns, path):
    """A grid of heat maps, one per layer (rows) and head (columns): query position (rows of each
    map) against key position (columns), the weight on a shared 0-1 colour scale."""
    plt = pyplot()
    H = patterns[0].shape[0]
    fig, axes = plt.subplots(len(patterns), H, figsize=(2.4 * H + 1.5, 2.4 * len(patterns) + 1.2), squeeze=False)
    ticks = range(len(labels)) if len(labels) <= 64 else []  # unreadable beyond
    for row, (layer, p) in enumerate(zip(layers, patterns)):
        for h in range(H):
            ax = axes[row][h]
            image = ax.imshow(p[h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {h}", fontsize=8)
            ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=5)
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=5)
        axes[row][0].set_ylabel("query (attending token)", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("key (attended-to token)", fontsize=7)
    fig.suptitle(f"attention patterns over {len(labels)} tokens (each row sums to 1)", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    save(fig, path, tight=False)


# ---- logit lens -------------------------------------------------------------------------
def logit_lens(cfg, model, tokenizer):
    """For the last positions of the prompt: the top-k next tokens read after each stage."""
    ids = prompt_ids(cfg, model, tokenizer)
    rows = interp.logit_lens(model, ids, cfg.top_k)
    first = 0 if cfg.positions <= 0 else max(0, len(ids) - cfg.positions)
    for t in range(first, len(ids)):
        actual = repr(interp.token_label(tokenizer, ids[t + 1])) if t + 1 < len(ids) else "(end of prompt)"
        print(f"position {t}: {interp.token_label(tokenizer, ids[t])!r}, next in the prompt: {actual}")
        table = [[name] + [f"{interp.token_label(tokenizer, top[t, j])!r} {probs[t, j]:.2f}"
                           for j in range(top.shape[1])] for name, top, probs in rows]
        print(interp.table_text(["stage"] + [f"top-{j + 1}" for j in range(cfg.top_k)], table) + "\n")


# ---- ablation ---------------------------------------------------------------------------
def ablate(cfg, model, tokenizer):
    """The rise in validation loss when each head alone is zero- or mean-ablated."""
    dataset = validation_data(cfg, tokenizer, model.config.block_size)
    rng = np.random.default_rng(cfg.seed)
    batches = [dataset.get_batch("val", cfg.batch_size, model.config.block_size, rng) for _ in range(cfg.batches)]
    base, delta = interp.head_ablation(model, batches, cfg.mode)
    print(f"validation loss {base:.4f} over {cfg.batches} x {cfg.batch_size} sequences; "
          f"increase when one head is {cfg.mode}-ablated:")
    print(layer_head_text(delta, float(delta.max())))
    if cfg.image:
        layer_head_png(delta, f"loss increase when one head is {cfg.mode}-ablated\n(base loss {base:.3f})",
                       cfg.image, "RdBu_r", "loss increase (nats/token)")


def validation_data(cfg, tokenizer, block_size):
    """A TokenDataset to draw validation batches from: out_dir's, or one made from text."""
    if not cfg.data_file and not cfg.init_from:
        return gdata.TokenDataset(cfg.out_dir)
    text = gdata.load_text(data_file=cfg.data_file or None)
    needed = 8 * (cfg.batches * cfg.batch_size + 4) * (block_size + 1)  # characters, generously
    directory = tempfile.mkdtemp(prefix="inspect-")
    gdata.prepare(text[-2 * needed:], tokenizer, directory, val_fraction=0.5)  # tokenise only the tail
    return gdata.TokenDataset(directory)


# ---- induction --------------------------------------------------------------------------
def induction(cfg, model, tokenizer):
    """Each head's induction score on repeated random tokens, and the in-context loss drop."""
    scores, first, second = interp.induction_run(model, cfg.repeat_len or None, cfg.batch_size, cfg.seed)
    print("induction score per head (attention from a token to the one after its previous occurrence):")
    print(layer_head_text(scores, 1.0))
    best = np.unravel_index(np.argmax(scores), scores.shape)
    print(f"best head {best[0]}.{best[1]}: {scores[best]:.3f}")
    print(f"loss on the first repeat {first:.3f}, on the second {second:.3f}: "
          f"in-context loss drop {first - second:.3f}")
    if cfg.image:
        layer_head_png(scores, "induction score of each head", cfg.image, "viridis",
                       "attention to the token after the earlier copy (0-1)", vmax=1.0)


def circuit(cfg, model, tokenizer):
    """Find the induction circuit (interp.find_circuit), print it, write it to out_dir/circuit.json;
    --image draws the attention of its best previous-token and induction heads on one repeated sequence."""
    found = interp.find_circuit(model, cfg.repeat_len or None, cfg.batch_size, cfg.seed)
    prev, ind = np.array(found["previous_token_scores"]), np.array(found["induction_scores"])
    role = lambda lh: ("induction" if lh in found["induction_heads"] else
                       "previous-token" if lh in found["previous_token_heads"] else "")
    print(f"heads on {found['batch_size']} sequences of {found['repeat_len']} random tokens repeated twice:")
    print(interp.table_text(["head", "previous-token", "induction", "role"],
                            [[f"{l}.{h}", f"{prev[l, h]:.3f}", f"{ind[l, h]:.3f}", role([l, h])]
                             for l in range(prev.shape[0]) for h in range(prev.shape[1])]))
    print(f"in-context loss drop {found['icl_loss_drop']:.3f}; fraction of it lost when a group is mean-ablated:")
    print(interp.table_text(["group", "heads", "drop lost"],
                            [[k.replace("_", " "), " ".join(f"{l}.{h}" for l, h in found[k]) or "-",
                              "-" if found["ablation"][k] is None else f"{found['ablation'][k]:.3f}"]
                             for k in ("induction_heads", "previous_token_heads", "other_heads")]))
    kc = np.array(found["k_composition"])
    print("K-composition (rows: layer-1 heads' keys, columns: layer-0 heads' outputs):")
    print(interp.table_text(["key \\ writer"] + [f"0.{j}" for j in range(kc.shape[1])],
                            [[f"1.{i}"] + [f"{v:.3f}" for v in row] for i, row in enumerate(kc)]))
    shifted = {int(k): np.array(v) for k, v in found["shifted_induction_scores"].items()}
    print("best head's attention to t - L + 1 + shift (shift 0: the induction score): " + ", ".join(
        f"{k:+d}: {best_head(m)}" for k, m in sorted({**shifted, 0: ind}.items())))
    for (l, h), (l0, h0) in found["k_composition_partners"]:
        print(f"induction head {l}.{h} reads most from head {l0}.{h0} ({role([l0, h0]) or 'not a previous-token head'})")
    print("mean norm of each piece of the residual stream: " + ", ".join(
        f"{k} {v:.2f}" for k, v in found["stream_norms"].items()))
    path = os.path.join(cfg.out_dir, "circuit.json")
    if not cfg.init_from:
        write_json(path, found)
        print(f"wrote {path}")
    if cfg.image:
        circuit_png(model, found, cfg)


def best_head(scores):
    """'0.812 (1.2)': the largest of a (n_layer, n_head) array and its head."""
    l, h = np.unravel_index(np.argmax(scores), scores.shape)
    return f"{scores[l, h]:.3f} ({l}.{h})"


def circuit_png(model, found, cfg):
    """The attention of the best previous-token head, and of the later-layer head that attends most
    to the induction target or a token near it (the shift in its title), on one repeated sequence."""
    prev = np.array(found["previous_token_scores"])
    by_shift = {0: np.array(found["induction_scores"]),
                **{int(k): np.array(v) for k, v in found["shifted_induction_scores"].items()}}
    shift = max(by_shift, key=lambda k: (by_shift[k][1:].max(), k == 0))
    l, h = np.unravel_index(np.argmax(by_shift[shift][1:]), by_shift[shift][1:].shape)
    p = np.unravel_index(np.argmax(prev[:-1]), prev[:-1].shape)
    heads = [(p, f"previous-token score {prev[p]:.2f}"),
             ((l + 1, h), f"attention to t-L+1{shift:+d}: {by_shift[shift][l + 1, h]:.2f}" if shift else
              f"induction score {by_shift[0][l + 1, h]:.2f}")]
    L = found["repeat_len"]
    ids = interp.repeated_random_tokens(model.config.vocab_size, L, 1, np.random.default_rng(cfg.seed))
    patterns = interp.attention_patterns(model, ids)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    for ax, ((l, h), name) in zip(axes, heads):
        image = ax.imshow(backend.to_device(patterns[l][0, h], "cpu"), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"head {l}.{h}: {name}", fontsize=9)
        ax.set_xlabel("key position")
        ax.axvline(L - 0.5, color="gray", lw=0.5)
        ax.axhline(L - 0.5, color="gray", lw=0.5)
    axes[0].set_ylabel(f"query position ({L} random tokens, then the same {L} again)")
    fig.suptitle("the induction circuit's two heads on one repeated sequence (grey lines: where the repeat starts)",
                 fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    save(fig, cfg.image, tight=False)


# ---- the Fourier view of modular arithmetic -------------------------------------------
def fourier(cfg):
    """The token embedding's norm per frequency at init and now, its key frequencies, and the
    validation accuracy restricted to them and without them (gpt/fourier.py)."""
    from gpt.checkpoint import load_model
    from gpt.tasks.modular import of_run
    model, _, ckpt = load_model(cfg.out_dir, cfg.device)
    task = of_run(ckpt.train_state.get("config", {}))
    view = gfourier.analyse(model, task, task.seed)
    norm_init, norm = np.sqrt(view["power_init"]), np.sqrt(view["power"])
    keys, shown = view["key_frequencies"], np.argsort(-norm, kind="stable")[:10]
    print(f"token embedding of residues 0..{task.p - 1} in the Fourier basis over the residues "
          f"(iteration {ckpt.train_state.get('iter_num', '?')}): norm per frequency k, largest first")
    print(interp.table_text(["k", "init", "now", ""], [[k, f"{norm_init[k]:.3f}", f"{norm[k]:.3f}",
                                                        "#" * round(20 * norm[k] / norm.max())] for k in shown]))
    print(f"key frequencies (power > {gfourier.KEY_SHARE:g} x the mean over k = 1..{task.p // 2}): {keys}")
    print(f"their share of the embedding's squared norm: {view['fourier_concentration_init']:.3f} at init, "
          f"{view['fourier_concentration']:.3f} now")
    print(f"validation accuracy {task.accuracy(model, 'val'):.3f}; embedding restricted to the key frequencies "
          f"{view['val_acc_restricted']:.3f}, with them excluded {view['val_acc_excluded']:.3f}")
    if cfg.image:
        plt = pyplot()
        fig, axes = plt.subplots(2, 1, sharex=True, figsize=(7, 4.5))
        for ax, values, when, share in ((axes[0], norm_init, "at init", view["fourier_concentration_init"]),
                                        (axes[1], norm, f"at iteration {ckpt.train_state.get('iter_num', '?')}",
                                         view["fourier_concentration"])):
            ax.bar(np.arange(len(values)), values, color=["tab:red" if k in keys else "tab:gray"
                                                          for k in range(len(values))])
            ax.set_ylabel("norm")
            ax.set_title(f"token embedding {when}: key frequencies (red) hold {share:.0%} of the squared norm",
                         fontsize=9)
        for key in keys:
            axes[1].annotate(str(key), (key, norm[key]), ha="center", va="bottom", fontsize=7)
        axes[1].set_xlabel(f"frequency k (cos and sin of 2 pi k a / {task.p})")
        save(fig, cfg.image)


# ---- metrics over training --------------------------------------------------------------
def read_metrics(out_dir):
    """The evaluation rows of out_dir/metrics.jsonl (those with a val_loss)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {path}: train with `python train.py --out_dir={out_dir}` first")
    with open(path) as fh:
        return [r for r in map(json.loads, fh) if "val_loss" in r]


# What each kind of metric is measured in: (name test, axis label, fixed y range or None).
METRIC_AXES = [
    (lambda c: c.endswith("loss"), "cross-entropy (nats/token)", None),
    (lambda c: c.endswith("_acc"), "accuracy (fraction correct)", (-0.02, 1.02)),
    (lambda c: "score" in c, "score (0-1)", (-0.02, 1.02)),
    (lambda c: c.endswith("drop"), "loss drop (nats/token)", None),
    (lambda c: c.endswith("norm"), "L2 norm of all weights", None),
]


def metric_axis(column):
    """(axis label, y range or None) for a logged metric, by its name."""
    return next(((label, ylim) for test, label, ylim in METRIC_AXES if test(column)), (column, None))


def metric_panels(runs):
    """[(title, [column, ...]), ...]: the numeric columns the runs logged at evaluations, grouped
    into one panel of losses, one of accuracies, and one for each other metric."""
    columns = []
    for rows in runs.values():
        for row in rows:
            columns += [k for k, v in row.items() if k != "iter" and isinstance(v, (int, float)) and k not in columns]
    losses = [c for c in columns if c.endswith("loss")]
    accuracies = [c for c in columns if c.endswith("_acc")]
    panels = [("loss", losses), ("accuracy", accuracies)] + [(c, [c]) for c in columns if c not in losses + accuracies]
    return [(title, cols) for title, cols in panels if cols]


def norm_ratios(runs):
    """{column: [(iter, first run's value / second run's)]} for each *norm column two runs logged.

    Both runs' weight norms may rise while one rises less: the ratio shows what weight decay does."""
    if len(runs) != 2:
        return {}
    (_, a), (_, b) = runs.items()
    ratios = {}
    for column in {k for r in a for k in r if k.endswith("norm")}:
        theirs = {r["iter"]: r[column] for r in b if column in r}
        pairs = [(r["iter"], r[column] / theirs[r["iter"]]) for r in a if column in r and theirs.get(r["iter"])]
        if pairs:
            ratios[column] = pairs
    return ratios


def plot_metrics(cfg):
    """Every metric the runs in --out_dir (comma-separated) logged at evaluations, against iteration."""
    runs = {out_dir: read_metrics(out_dir) for out_dir in cfg.out_dir.split(",")}
    panels, ratios = metric_panels(runs), norm_ratios(runs)
    for out_dir, rows in runs.items():
        columns = [c for _, cols in panels for c in cols]
        print(f"{out_dir}:")
        print(interp.table_text(["iter"] + columns, [[r["iter"]] + [f"{r[c]:.4f}" if c in r else "" for c in columns]
                                                     for r in rows]))
    names = [os.path.basename(out_dir.rstrip("/")) for out_dir in runs]
    plt = pyplot()
    n = len(panels) + len(ratios)
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(6.5, 2.3 * n + 0.9), squeeze=False)
    colors, styles = plt.rcParams["axes.prop_cycle"].by_key()["color"], ["-", "--", ":", "-."]
    for ax, (title, columns) in zip(axes[:, 0], panels):
        for color, name, rows in zip(colors, names, runs.values()):
            for style, column in zip(styles * len(columns), sorted(columns, key=lambda c: not c.startswith("val"))):
                tracked = [r for r in rows if column in r]
                if tracked:
                    ax.plot([r["iter"] for r in tracked], [r[column] for r in tracked], style, color=color,
                            label=column if len(runs) == 1 else f"{name}: {column}")
        for color, out_dir in zip(colors, runs):
            change = phase_change_iter(out_dir)
            if change is not None:
                ax.axvline(change, color=color, lw=0.8, ls=":", label="phase change" if ax is axes[0, 0] else None)
        label, ylim = metric_axis(columns[0])
        ax.set_title(title.replace("_", " "), fontsize=9)
        ax.set_ylabel(label, fontsize=8)
        if ylim:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=7)
    for ax, (column, pairs) in zip(axes[len(panels):, 0], ratios.items()):
        ax.plot([i for i, _ in pairs], [r for _, r in pairs], color="black")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{column.replace('_', ' ')}: {names[0]} / {names[1]}", fontsize=9)
        ax.set_ylabel("ratio", fontsize=8)
    axes[-1, 0].set_xlabel("iteration (optimizer steps)")
    fig.suptitle(f"{' vs '.join(names)}: metrics logged at each evaluation", fontsize=10)
    save(fig, cfg.image or os.path.join(cfg.out_dir.split(",")[0], "emergence.png"))


def phase_change_iter(out_dir):
    """The phase_change_iter of out_dir/emergence.json (written at the end of an induction run), else None."""
    path = os.path.join(out_dir, "emergence.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh).get("phase_change_iter")


# ---- shared views -----------------------------------------------------------------------
def layer_head_text(matrix, vmax):
    """A layer x head table of numbers, then the same as shades (blank: 0 or less, '@': vmax)."""
    table = [[layer] + [f"{v:+.3f}" for v in row] for layer, row in enumerate(matrix)]
    text = interp.table_text(["layer"] + [f"head {h}" for h in range(matrix.shape[1])], table)
    shades = "\n".join(f"  layer {i}: [" + "".join(interp.shade(v, vmax) for v in row) + "]"
                       for i, row in enumerate(matrix))
    return text + "\n" + shades


def layer_head_png(matrix, title, path, cmap, label, vmax=None):
    """A layer (rows) x head (columns) heatmap with the values written in the cells, in black or
    white, whichever reads better on the cell's colour; `label` names the colour bar's quantity,
    `vmax` the top of its scale (default: the largest magnitude in `matrix`)."""
    plt = pyplot()
    L, H = matrix.shape
    fig, ax = plt.subplots(figsize=(0.7 * H + 2.5, 0.55 * L + 1.6))
    vmax = vmax or float(np.abs(matrix).max()) or 1.0  # default: the largest magnitude
    vmin = -vmax if cmap == "RdBu_r" else 0
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    for (i, j), v in np.ndenumerate(matrix):
        r, g, b, _ = image.cmap(image.norm(v))
        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"  # luma of the cell
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=6, color=ink)
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, label=label)
    save(fig, path)


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend; one line naming the `plot` extra when it is missing."""
    matplotlib = require("matplotlib", "plot", "drawing PNGs (the text views work without it)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path, tight=True):
    """Draw `fig` into `path` (its format from the extension, PNG without one) atomically: a full
    disk is write_file's one DiskFullError line, and leaves no partial image."""
    if tight:  # a colour bar shared by a grid of axes places itself; tight_layout would fight it
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=os.path.splitext(path)[1][1:].lower() or "png", dpi=150)
    write_file(path, buffer.getvalue())
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
