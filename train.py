"""Train a GPT: pre-train from scratch on Shakespeare (the default) or any text, resume, or fine-tune.

    python train.py                                   # configs/shakespeare_char_cpu.toml
    python train.py configs/shakespeare_char.toml --device=cuda
    python train.py --init_from=resume --out_dir=out-shakespeare-char-cpu
    python train.py configs/finetune_tldr.toml        # fine-tune a checkpoint on prompt/completion pairs

A synthetic task instead of text (--dataset=modular_addition, addition, induction; gpt/tasks/)
generates its examples from the seed, logs its own metrics at every evaluation (accuracy,
say) and writes a summary JSON into out_dir when the run ends.

Fine-tuning (--init_from=a checkpoint or GPT-2 directory) starts from the loaded weights and
tokenizer with a fresh optimizer; the text is encoded with that tokenizer, or --sft_file
gives JSONL prompt/completion pairs trained on the completions only (gpt/sft.py), or
--chat_file JSONL conversations packed several to a row, trained on the assistant's turns
(gpt/chat/dataset.py; a tokenizer without the chat tokens gets them, and the model's
embedding grows by rows set to the mean of the others). A block_size below the model's
crops its context; dropout is the config's.

The loop is nanoGPT's: cosine learning rate with warmup, gradient accumulation and
clipping, evaluation of train and val loss every `eval_interval` iterations, and a
checkpoint (gpt/checkpoint.py) whenever val improves. Every random draw comes from a
generator whose state is checkpointed, so a resumed run repeats the losses of an
uninterrupted one exactly. Ctrl-C or SIGTERM saves and exits; a non-finite loss stops
the run and leaves the last good checkpoint.

    mpiexec -n 2 python train.py --gradient_accumulation_steps=2   # data-parallel, on 2 processes

One run at a time holds out_dir (gpt/rundir.py): a second run on it stops at once, a run from
scratch into a folder that holds a checkpoint stops unless --overwrite=true, temporary files
that killed runs left are removed, and a start that fails leaves no new folder behind.

Under mpiexec (nanograd/distributed.py) every rank draws every micro-batch but runs only
its share, the gradients are summed across ranks before clipping, and rank 0 alone prints
and writes; gradient_accumulation_steps counts the micro-batches of all ranks together.

Left out: mixed precision, model parallelism.
"""
import dataclasses
import json
import math
import os
import signal
import time

import numpy as np

import nanograd as ng
from gpt import data as gdata
from gpt.chat import ChatDataset, add_chat_tokens, has_chat_template
from gpt.checkpoint import FILENAME, load_checkpoint, save_checkpoint
from gpt.cli import EXPECTED, run_main
from gpt.config import DEFAULT_OUT_DIR, ConfigError, option, parse
from gpt.generate import inference_mode
from gpt.hf import build, read_pretrained
from gpt.interp import emergence_metrics
from gpt.model import GPT, GPTConfig
from gpt.rundir import append_line, hold_run_folder
from gpt.safetensors import write_file
from gpt.sft import SFTDataset
from gpt.tasks import TASKS, FiniteTask, Task, make_task
from gpt.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer_json
from nanograd import distributed

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "shakespeare_char_cpu.toml")


@dataclasses.dataclass
class TrainConfig:
    # I/O
    out_dir: str = option(DEFAULT_OUT_DIR, "directory for ckpt.safetensors, metrics.jsonl and the token files")
    init_from: str = option("scratch", "'scratch', 'resume' (continue the checkpoint in out_dir), or a "
                                       "checkpoint or GPT-2 directory to fine-tune")
    overwrite: bool = option(False, "start from scratch even if out_dir holds a checkpoint: the old run is replaced")
    eval_interval: int = option(250, "evaluate train/val loss every this many iterations", valid="[1, inf)")
    eval_iters: int = option(20, "batches per split in each evaluation", valid="[1, inf)")
    log_interval: int = option(10, "print a log line every this many iterations", valid="[1, inf)")
    always_save_checkpoint: bool = option(False, "save at every evaluation, not only when val improves")
    eval_only: bool = option(False, "evaluate once and exit")
    track_emergence: bool = option(False, "log induction-head scores and the in-context loss drop at each evaluation")
    # data
    dataset: str = option("shakespeare", "'shakespeare' (text) or a synthetic task (gpt/tasks/): "
                                         + ", ".join(TASKS) + "; used when data_file is empty",
                                 valid=("shakespeare", *TASKS))
    data_file: str = option("", "path to any UTF-8 text file to train on instead")
    tokenizer: str = option("char", "'char', 'bpe' (trained on the train split) or 'gpt2' (needs gpt2_dir)",
                            valid=("char", "bpe", "gpt2"))
    bpe_vocab_size: int = option(1024, "vocabulary size when tokenizer='bpe'", valid="[257, inf)")
    gpt2_dir: str = option("", "directory with GPT-2's vocab.json and merges.txt (tokenizer='gpt2')")
    sft_file: str = option("", "JSONL {\"prompt\", \"completion\"} lines: fine-tune on completions only")
    chat_file: str = option("", "JSONL {\"messages\": [...]} conversations: fine-tune on the assistant's turns")
    full_batch: bool = option(False, "every batch is a whole split (tasks that list their examples: modular_*)")
    # tasks: modular_* (gpt/tasks/modular.py)
    p: int = option(97, "modular_*: the modulus; tokens 0..p-1 are the residues, p is '='", valid="[2, 4096]")
    train_fraction: float = option(0.3, "modular_*: fraction of all pairs (a, b) trained on, the rest is val",
                                   valid="(0, 1)")
    # tasks: addition (gpt/tasks/addition.py)
    n_digits: int = option(3, "addition: digits per operand; an example is 3 n_digits + 2 tokens", valid="[1, 9]")
    reverse_answer: bool = option(True, "addition: write the sum least significant digit first (Lee et al. 2023)")
    val_problems: int = option(2000, "addition: problems held out of training, scored at each evaluation",
                               valid="[1, inf)")
    # tasks: induction (gpt/tasks/induction.py)
    induction_vocab: int = option(64, "induction: number of symbols", valid="[8, inf)")
    induction_min_len: int = option(4, "induction: shortest segment that recurs", valid="[2, inf)")
    induction_max_len: int = option(32, "induction: longest segment that recurs", valid="[2, inf)")
    induction_prefix: int = option(16, "induction: most random symbols before the first segment", valid="[0, inf)")
    induction_gap: int = option(0, "induction: most random symbols between a segment and its copy", valid="[0, inf)")
    # model
    n_layer: int = option(4, "transformer blocks", valid="[1, inf)")
    n_head: int = option(4, "attention heads per block", valid="[1, inf)")
    n_embd: int = option(128, "embedding width", valid="[1, inf)")
    block_size: int = option(64, "context length in tokens", valid="[1, inf)")
    dropout: float = option(0.0, "dropout probability (0 for small data or pre-training at scale)", valid="[0, 1)")
    bias: bool = option(True, "biases in Linear and LayerNorm layers, as GPT-2")
    attn_only: bool = option(False, "attention-only blocks, no MLPs (Olsson et al.'s toy transformers)")
    tie_embeddings: bool = option(True, "the output layer is the token embedding (GPT-2); false: its own matrix")
    embedding_init_std: float = option(0.02, "init std of the token and position embeddings", valid="(0, inf)")
    # optimisation
    batch_size: int = option(12, "sequences per micro-batch", valid="[1, inf)")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", valid="[1, inf)")
    max_iters: int = option(2000, "optimizer steps in total", valid="[0, inf)")
    learning_rate: float = option(1e-3, "peak learning rate", valid="(0, inf)")
    weight_decay: float = option(0.1, "AdamW weight decay on 2-D weights", valid="[0, inf)")
    beta1: float = option(0.9, "AdamW beta1", valid="[0, 1)")
    beta2: float = option(0.99, "AdamW beta2", valid="[0, 1)")
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0: off)", valid="[0, inf)")
    decay_lr: bool = option(True, "cosine decay of the learning rate")
    warmup_iters: int = option(100, "linear warmup steps", valid="[0, inf)")
    lr_decay_iters: int = option(2000, "step at which the learning rate reaches min_lr", valid="[0, inf)")
    min_lr: float = option(1e-4, "final learning rate", valid="[0, inf)")
    # system
    device: str = option("cpu", "'cpu' or 'cuda' (needs CuPy)", valid=("cpu", "cuda"))
    seed: int = option(1337, "seed for initialisation, batches and dropout", valid="[0, inf)")

    def __post_init__(self):
        """Constraints between options (gpt.config.build checks each option's own range)."""
        scratch = self.init_from == "scratch"
        checks = [
            (not self.decay_lr or self.warmup_iters <= self.lr_decay_iters,
             f"warmup_iters={self.warmup_iters} must be <= lr_decay_iters={self.lr_decay_iters} (or decay_lr=false)"),
            (not self.decay_lr or self.min_lr <= self.learning_rate,
             f"min_lr={self.min_lr} must be <= learning_rate={self.learning_rate} (or decay_lr=false)"),
            (not scratch or self.n_embd % self.n_head == 0,
             f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: pick n_embd a multiple of n_head"),
            (not scratch or self.tokenizer != "gpt2" or self.gpt2_dir,
             "tokenizer=gpt2 needs gpt2_dir, the directory with GPT-2's vocab.json and merges.txt"),
            (not scratch or not self.sft_file,
             "--sft_file fine-tunes a trained model: set --init_from to a checkpoint or GPT-2 directory"),
            (not scratch or not self.chat_file,
             "--chat_file fine-tunes a trained model: set --init_from to a checkpoint or GPT-2 directory"),
            (not (self.sft_file and self.chat_file), "--sft_file and --chat_file are two datasets: give one"),
            (self.init_from in ("scratch", "resume") or os.path.abspath(self.init_from) not in (
                os.path.abspath(self.out_dir), os.path.abspath(os.path.join(self.out_dir, FILENAME))),
             f"--init_from={self.init_from} is this run's own --out_dir: fine-tune into another --out_dir "
             "(or continue the run with --init_from=resume)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def main(argv):
    if not any(a.endswith(".toml") for a in argv):  # --help shows the values this config sets
        argv = [DEFAULT_CONFIG] + argv
    cfg = parse(TrainConfig, argv, "train.py")
    ng.backend.check_device(cfg.device)
    world = distributed.init(cfg.device, cfg.gradient_accumulation_steps,  # one process unless under mpiexec
                             checkpoint=os.path.join(cfg.out_dir, FILENAME))
    with world.fail_together(EXPECTED), hold_run_folder(cfg.out_dir, "train.py", fresh=cfg.init_from != "resume",
                                                         overwrite=cfg.overwrite, world=world):
        Trainer(cfg, world).run()


class Trainer:
    """The state of one run (model, optimizer, data, RNGs, counters) and its loop."""

    def __init__(self, cfg, world=None):
        self.cfg, self.world = cfg, world or distributed.World()  # World(): one process
        self.ckpt_path = os.path.join(cfg.out_dir, FILENAME)
        ng.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)  # batch sampling
        self.iter_num, self.best_val, self.last_eval = 0, math.inf, -1
        if cfg.init_from == "resume":
            ckpt = load_checkpoint(self.ckpt_path, resume=True)
            self.tokenizer = ckpt.tokenizer
            self.data = self._resumed_data()
            self._build(GPT(ckpt.model_config))
            self.model.load_state_dict(ckpt.model_state)
            self.optimizer.load_state_dict(ckpt.optimizer_state)
            self._restore(ckpt.train_state)
        elif cfg.init_from == "scratch":
            self.tokenizer, self.data = self._prepare_data()
            self._build(GPT(GPTConfig(block_size=cfg.block_size, vocab_size=self.tokenizer.vocab_size,
                                      n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                      dropout=cfg.dropout, bias=cfg.bias, attn_only=cfg.attn_only,
                                      tie_embeddings=cfg.tie_embeddings,
                                      embedding_init_std=cfg.embedding_init_std)))
        else:  # fine-tune a checkpoint or GPT-2 directory
            config, state, self.tokenizer = read_pretrained(cfg.init_from)
            model = build(dataclasses.replace(config, dropout=cfg.dropout), state, cfg.init_from)
            if cfg.block_size < config.block_size:
                model.crop_block_size(cfg.block_size)
                print(f"cropped the context of {cfg.init_from} from {config.block_size} to {cfg.block_size} tokens")
            if cfg.chat_file:
                self._add_chat_tokens(model)
            self.data = self._file_data() or self._prepare_data(self.tokenizer)[1]
            self._build(model)
        for split in ("train", "val"):
            self.data.check_length(split, self.model.config.block_size)
        if cfg.full_batch and not isinstance(self.data, FiniteTask):
            raise ConfigError("--full_batch=true needs a task that lists its examples (the modular_* datasets)")
        if isinstance(self.data, Task) and self.data.vocab_size != self.model.config.vocab_size:
            raise ConfigError(f"--dataset={cfg.dataset} with these options has {self.data.vocab_size} tokens but the "
                              f"model holds {self.model.config.vocab_size}: resume with the run's own options (e.g. --p)")
        self._start_metrics()

    def _resumed_data(self):
        """The data of the run being resumed: its fine-tuning file, its task (rebuilt from the seed) or its token files."""
        cfg = self.cfg
        if cfg.sft_file or cfg.chat_file:
            return self._file_data()
        if cfg.dataset in TASKS and not cfg.data_file:
            return make_task(cfg)
        return gdata.TokenDataset(cfg.out_dir)

    def _file_data(self):
        """The fine-tuning file's dataset (--chat_file or --sft_file), or None when there is none."""
        if self.cfg.chat_file:
            return ChatDataset(self.cfg.chat_file, self.tokenizer)
        return SFTDataset(self.cfg.sft_file, self.tokenizer) if self.cfg.sft_file else None

    def _add_chat_tokens(self, model):
        """Give the tokenizer the chat tokens it lacks, and `model` embedding rows for their ids."""
        if has_chat_template(self.tokenizer):
            return
        old, self.tokenizer = self.tokenizer.vocab_size, add_chat_tokens(self.tokenizer)
        new = self.tokenizer.vocab_size
        if new > model.config.vocab_size:
            model.resize_token_embeddings(new)
            print(f"added the chat tokens: vocab {old} -> {new}, the new embedding rows set to the mean of the others")
        else:
            print(f"added the chat tokens: vocab {old} -> {new}, within the model's {model.config.vocab_size} "
                  "embedding rows")

    def _prepare_data(self, tok=None):
        """(tokenizer, data): a task with its own tokenizer, or the text encoded into out_dir by `tok`
        (or by a new cfg.tokenizer) as a TokenDataset. Under mpiexec rank 0 writes the token files
        and the other ranks receive its tokenizer."""
        cfg = self.cfg
        if cfg.dataset in TASKS and not cfg.data_file:
            if tok is not None:
                raise ConfigError(f"--dataset={cfg.dataset} brings its own tokenizer: train it with --init_from=scratch")
            task = make_task(cfg)
            return task.tokenizer, task
        if self.world.is_main:
            text = gdata.load_text(cfg.dataset, cfg.data_file or None)
            tok = self._new_tokenizer(text) if tok is None else tok
            gdata.prepare(text, tok, cfg.out_dir, source=cfg.data_file or cfg.dataset)
        if self.world.size > 1:
            tok = load_tokenizer_json(self.world.broadcast(tok.to_json() if self.world.is_main else None,
                                                           "rank 0 to prepare the data"))
        return tok, gdata.TokenDataset(cfg.out_dir)

    def _new_tokenizer(self, text):
        cfg = self.cfg
        train_text = text[: int(len(text) * 0.9)]
        if cfg.tokenizer == "char":
            return CharTokenizer.train(text)
        if cfg.tokenizer == "bpe":
            return BPETokenizer.train(train_text, cfg.bpe_vocab_size)
        if cfg.tokenizer == "gpt2":
            return BPETokenizer.from_gpt2(os.path.join(cfg.gpt2_dir, "vocab.json"),
                                          os.path.join(cfg.gpt2_dir, "merges.txt"))
        raise ValueError(f"--tokenizer={cfg.tokenizer!r}: use 'char', 'bpe' or 'gpt2'")

    def _build(self, model):
        cfg = self.cfg
        model_config = model.config
        self.model = model.to(cfg.device)
        self.optimizer = self.model.configure_optimizers(cfg.weight_decay, cfg.learning_rate,
                                                         (cfg.beta1, cfg.beta2))
        self.tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * model_config.block_size
        if self.world.size > 1:
            ng.manual_seed(self.world.seed(cfg.seed))  # each rank a dropout stream of its own
        print(f"model: {self.model.num_params() / 1e6:.2f}M parameters, vocab {model_config.vocab_size}, "
              f"{self.tokens_per_iter} tokens per iteration")

    # ---- checkpoint state ----------------------------------------------------------
    def _train_state(self):
        state = {"iter_num": self.iter_num, "best_val_loss": self.best_val, "last_eval": self.last_eval,
                 "data_rng": self.rng.bit_generator.state, "nanograd_rng": ng.get_rng_state(),
                 "config": dataclasses.asdict(self.cfg)}
        if self.world.size > 1:  # every rank's dropout stream (the data stream is the same on all)
            state["rank_rngs"] = self.world.gather_states(ng.get_rng_state())
        return state

    def _restore(self, state):
        self.iter_num, self.best_val, self.last_eval = state["iter_num"], state["best_val_loss"], state["last_eval"]
        self.rng.bit_generator.state = state["data_rng"]
        saved = state.get("rank_rngs", [state["nanograd_rng"]])
        if len(saved) == self.world.size:
            ng.set_rng_state(saved[self.world.rank])
        else:
            ng.manual_seed(self.world.seed(self.cfg.seed, self.iter_num))
            print(f"the checkpoint was written by {len(saved)} process(es), this run has {self.world.size}: "
                  "the dropout random streams restart (seeded by seed, rank and iteration)")
        print(f"resumed from {self.ckpt_path} at iteration {self.iter_num} (best val {self.best_val:.4f})")

    def save(self):
        state = self._train_state()
        if self.world.is_main:
            save_checkpoint(self.ckpt_path, self.model, self.tokenizer, self.optimizer, state)
            print(f"saved checkpoint to {self.ckpt_path}")
        self.world.barrier("rank 0 to write the checkpoint")

    # ---- the loop ------------------------------------------------------------------
    def lr_at(self, it):
        c = self.cfg
        return ng.optim.cosine_schedule(it, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_decay_iters) \
            if c.decay_lr else c.learning_rate

    def batch(self, split, rng):
        """The model's keyword arguments for one batch: idx and targets (B, T) on the device, and
        segments (B, T) when the data packs several sequences per row (gpt/chat/dataset.py)."""
        x, y, *segments = self.data.get_batch(split, self.cfg.batch_size, self.model.config.block_size, rng)
        batch = {"idx": ng.Tensor(x, device=self.cfg.device), "targets": ng.Tensor(y, device=self.cfg.device)}
        return batch | ({"segments": segments[0]} if segments else {})

    def estimate_loss(self):
        """Mean loss over eval_iters batches of each split, in eval mode.

        Batches come from a generator seeded by (seed, iteration), so evaluating never
        disturbs the training stream and repeats exactly after a resume.
        """
        rng = np.random.default_rng([self.cfg.seed, self.iter_num])
        n, losses = self.cfg.eval_iters, {}
        with inference_mode(self.model):
            for split in ("train", "val"):
                mine = []
                for k in range(n):
                    batch = self.batch(split, rng)  # every rank draws every batch and runs its share
                    if self.world.owns(k, n):
                        mine.append(self.model(**batch)[1].item())
                losses[split] = float(np.mean(self.world.gather_in_order(mine)))
        return losses

    def evaluate(self):
        self.world.check_replicas(self.model.parameters(), self.iter_num)
        losses = self.estimate_loss()
        self.last_eval = self.iter_num
        print(f"step {self.iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        row = {"iter": self.iter_num, "train_loss": losses["train"], "val_loss": losses["val"]}
        if self.cfg.track_emergence:  # gpt/interp.py; its own seeded tokens, so training is unchanged
            row.update(emergence_metrics(self.model, seed=self.cfg.seed))
            print(f"step {self.iter_num}: induction score {row['induction_score']:.3f}, "
                  f"in-context loss drop {row['icl_loss_drop']:.3f}")
        if isinstance(self.data, Task):  # the task's own numbers, e.g. accuracy
            extra = self.data.metrics(self.model)
            row.update(extra)
            if extra:
                print(f"step {self.iter_num}: " + ", ".join(f"{k} {v:.4f}" for k, v in extra.items()))
        self.log_metrics(row)
        if losses["val"] < self.best_val or self.cfg.always_save_checkpoint:
            self.best_val = min(self.best_val, losses["val"])
            if self.iter_num > 0:
                self.save()

    def train_step(self):
        """One optimizer step over gradient_accumulation_steps micro-batches; returns the loss."""
        cfg = self.cfg
        lr = self.lr_at(self.iter_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mine, steps = [], cfg.gradient_accumulation_steps
        for k in range(steps):
            batch = self.batch("train", self.rng)  # every rank draws every micro-batch: one data stream
            if self.world.owns(k, steps):
                _, loss = self.model(**batch)
                loss = loss / steps
                loss.backward()
                mine.append(loss.item())
        total, shares = 0.0, self.world.gather_in_order(mine)
        for share in shares:
            total += share
        if not math.isfinite(total):
            bad = next(k for k, share in enumerate(shares) if not math.isfinite(share))
            where = f" on rank {self.world.owner(bad, steps)}" if self.world.size > 1 else ""
            kept = (f"the last good checkpoint is {self.ckpt_path}" if os.path.exists(self.ckpt_path)
                    else "no checkpoint was written yet")
            raise distributed.on_every_rank(FloatingPointError(
                f"loss became {total} at iteration {self.iter_num}{where}; stopping ({kept}): "
                "try a lower learning_rate"))
        self.world.sum_gradients(self.model.parameters())
        if cfg.grad_clip:
            ng.optim.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return total, lr

    def _start_metrics(self):
        """A new run starts an empty metrics.jsonl; a resumed one keeps the rows up to its checkpoint
        (later ones were logged after the last save, and the resumed run logs them again)."""
        if not self.world.is_main:
            return
        path = os.path.join(self.cfg.out_dir, "metrics.jsonl")
        kept = []
        if self.cfg.init_from == "resume" and os.path.exists(path):
            with open(path) as fh:
                kept = [line for line in fh if line.endswith("\n") and json.loads(line)["iter"] <= self.iter_num]
        write_file(path, "".join(kept).encode())

    def log_metrics(self, row):
        if not self.world.is_main:
            return
        append_line(os.path.join(self.cfg.out_dir, "metrics.jsonl"), json.dumps(row))

    def run(self):
        cfg, stop = self.cfg, _StopFlag()
        start_iter, t_start, t_last = self.iter_num, time.time(), time.time()
        while True:
            if (self.iter_num % cfg.eval_interval == 0 or self.iter_num == cfg.max_iters) \
                    and self.iter_num != self.last_eval:
                self.evaluate()
            if cfg.eval_only or self.iter_num >= cfg.max_iters:
                break
            loss, lr = self.train_step()
            self.iter_num += 1
            if self.iter_num % cfg.log_interval == 0:
                now = time.time()
                ms = (now - t_last) * 1000 / cfg.log_interval
                done = self.iter_num - start_iter
                eta = (now - t_start) / done * (cfg.max_iters - self.iter_num)
                print(f"iter {self.iter_num}/{cfg.max_iters}: loss {loss:.4f}, lr {lr:.2e}, {ms:.0f} ms/iter, "
                      f"{self.tokens_per_iter * 1000 / ms:.0f} tok/s, ETA {eta:.0f}s")
                self.log_metrics({"iter": self.iter_num, "loss": loss, "lr": lr, "ms_per_iter": ms})
                t_last = now
            signal_name = self.world.first(stop.signal)  # the ranks stop together, at the same iteration
            if signal_name:
                self.save()
                print(f"stopped by {signal_name} at iteration {self.iter_num}; "
                      f"continue with --init_from=resume --out_dir={cfg.out_dir}")
                return
        print(f"done: {self.iter_num} iterations in {time.time() - t_start:.0f}s, best val loss {self.best_val:.4f}")
        if isinstance(self.data, Task) and self.world.is_main:
            self.data.finish(self.model, cfg.out_dir)


class _StopFlag:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks between iterations."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name


if __name__ == "__main__":
    run_main(main)
