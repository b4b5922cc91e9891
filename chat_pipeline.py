"""The whole life of a chat model on 2 cores: data, pre-training, fine-tuning, evaluation, a report card.

    python chat_pipeline.py                     # run folder out-chat/
    python chat_pipeline.py --tiny              # a CI-sized run of seconds (configs/chat_tiny.toml)
    python chat.py --out_dir=out-chat           # then talk to the chat model

The stages, in order (each one's record lands in out_dir/pipeline.json when it is done):

    data      gpt.chat.tasks.build_tasks into out_dir/data: the pre-training text (every play
              but the held-out ones), the five tasks as chat JSONL, the held-out evaluation sets
    pretrain  train.py's Trainer on the pre-training text, into out_dir/pretrain
    before    every task on the pre-trained model, with few-shot prompts in plain text
    finetune  train.py's Trainer on the task mixture (chat format, loss on the assistant turns,
              conversations packed per row), into out_dir itself, where chat.py finds it
    after     every task on the chat model (greedy replies, batched), and its best induction head
    report    out_dir/report.json and out_dir/REPORT.md (gpt/chat/report.py)

Running the command again skips every stage already done; a training stage that was
interrupted (Ctrl-C saves a checkpoint, as train.py does) continues from its checkpoint.
The run folder remembers the options it was made with: another set of options, or a folder
that holds something else, is refused in one line (exit 2). The pipeline holds the run
folder's lock (gpt/rundir.py) for its whole life.

The default run (docs/chat.md has its numbers): 29 min 28 s of wall time, 15 min 17 s of CPU
time, on 2 cores of an AMD EPYC (AVX-512), 2026-12-07.

Left out: data-parallel training (train.py under mpiexec does that), GPUs, tuning the
options automatically.
"""
import dataclasses
import json
import os
import signal
import sys
import time

from gpt.chat import evaluate, report
from gpt.chat.plays import ALPHABET, pretraining_text
from gpt.chat.tasks import build_tasks, count_option, counts_of
from gpt.chat.template import add_chat_tokens
from gpt.checkpoint import FILENAME, load_model
from gpt.cli import run_main
from gpt.config import ConfigError, option, parse
from gpt.rundir import LOCK, check_writable, hold_run_folder
from gpt.safetensors import atomic_write
from gpt.tokenizer import BPETokenizer, CharTokenizer
from train import Trainer, TrainConfig

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_CONFIG = os.path.join(HERE, "configs", "chat_tiny.toml")
RECORD = "pipeline.json"
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C


@dataclasses.dataclass
class PipelineConfig:
    out_dir: str = option("out-chat", "the run folder: data/, pretrain/, the chat model, report.json, REPORT.md")
    seed: int = option(1337, "seed for the data, initialisation, batches and evaluation", valid="[0, inf)")
    # data
    max_chars: int = option(200, "most characters in one conversation's messages", valid="[100, inf)")
    translation: int = count_option("translation")
    qa: int = count_option("qa")
    summarization: int = count_option("summarization")
    dialogue: int = count_option("dialogue")
    generation: int = count_option("generation")
    # model
    tokenizer: str = option("char", "'char' (the tasks' alphabet) or 'bpe' (byte-level, trained on the "
                                    "pre-training text)", valid=("char", "bpe"))
    bpe_vocab_size: int = option(1024, "vocabulary size when tokenizer='bpe'", valid="[257, inf)")
    n_layer: int = option(4, "transformer blocks", valid="[1, inf)")
    n_head: int = option(4, "attention heads per block", valid="[1, inf)")
    n_embd: int = option(128, "embedding width", valid="[1, inf)")
    block_size: int = option(256, "context length in tokens, for both training stages", valid="[1, inf)")
    tie_embeddings: bool = option(True, "the output layer is the token embedding (GPT-2); false: its own matrix")
    embedding_init_std: float = option(0.02, "init std of the token and position embeddings", valid="(0, inf)")
    # pre-training
    pretrain_iters: int = option(1500, "pre-training steps", valid="[1, inf)")
    pretrain_batch_size: int = option(12, "pre-training sequences per step", valid="[1, inf)")
    pretrain_lr: float = option(1e-3, "pre-training peak learning rate", valid="(0, inf)")
    # fine-tuning
    finetune_iters: int = option(1500, "fine-tuning steps", valid="[1, inf)")
    finetune_batch_size: int = option(8, "fine-tuning rows per step (each packed with conversations)",
                                      valid="[1, inf)")
    finetune_lr: float = option(1e-3, "fine-tuning peak learning rate", valid="(0, inf)")
    # both training stages
    warmup_iters: int = option(100, "linear warmup steps of each training stage", valid="[0, inf)")
    eval_interval: int = option(250, "evaluate train/val loss every this many steps", valid="[1, inf)")
    eval_iters: int = option(20, "batches per split in each loss evaluation", valid="[1, inf)")
    log_interval: int = option(50, "print a log line every this many steps", valid="[1, inf)")
    # task evaluation
    eval_items: int = option(200, "held-out items scored per task (0: all)", valid="[0, inf)")
    eval_batch_size: int = option(32, "prompts decoded together", valid="[1, inf)")
    shots: int = option(3, "most solved examples before each question for the pre-trained model "
                           "(fewer where the context is too short)", valid="[0, inf)")
    max_new_tokens: int = option(200, "longest reply in tokens", valid="[1, inf)")
    samples: int = option(3, "sample conversations per task in the report", valid="[0, inf)")

    def __post_init__(self):
        """Constraints between options (gpt.config.build checks each option's own range)."""
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                              "pick n_embd a multiple of n_head")
        if self.warmup_iters > min(self.pretrain_iters, self.finetune_iters):
            raise ConfigError(f"warmup_iters={self.warmup_iters} must be <= pretrain_iters and finetune_iters")


class Paths:
    """Where each stage reads and writes inside the run folder."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.record = os.path.join(out_dir, RECORD)
        self.data = os.path.join(out_dir, "data")
        self.pretrain_text = os.path.join(self.data, "pretrain.txt")
        self.pretrain = os.path.join(out_dir, "pretrain")
        self.chat = out_dir  # the chat model: `python chat.py --out_dir=out_dir` finds it


def main(argv):
    argv = [TINY_CONFIG if a == "--tiny" else a for a in argv]
    cfg = parse(PipelineConfig, argv, "chat_pipeline.py")
    paths = Paths(cfg.out_dir)
    check_writable(cfg.out_dir, "--out_dir")
    os.makedirs(cfg.out_dir, exist_ok=True)  # ours, so that a failed stage leaves the stages before it
    with hold_run_folder(cfg.out_dir, what="chat_pipeline.py"):
        record = open_record(paths, cfg)
        for name, stage in STAGES:
            if name in record["stages"]:
                print(f"[{name}] done before ({record['stages'][name]['seconds']:.0f}s): skipped")
                continue
            print(f"[{name}] starting")
            t0, cpu0 = time.time(), time.process_time()
            try:
                result = stage(cfg, paths, record)
            except KeyboardInterrupt:
                print(f"stopped during [{name}]; run the same command again to continue (the stages done are kept)")
                sys.exit(EXIT_INTERRUPTED)
            result["seconds"], result["cpu_seconds"] = time.time() - t0, time.process_time() - cpu0
            record["stages"][name] = result
            record["stages"] = {n: record["stages"][n] for n, _ in STAGES if n in record["stages"]}  # in order
            write_json(paths.record, record)
            print(f"[{name}] done in {result['seconds']:.0f}s")
    print(f"report card: {os.path.join(cfg.out_dir, report.MARKDOWN)}; "
          f"chat with: python chat.py --out_dir={cfg.out_dir}")


# ---- the run folder's record -------------------------------------------------------------------
def open_record(paths, cfg):
    """The run folder's record {"options", "stages"}: read back, or started in a new or empty folder.

    ValueError (exit 2) for a folder that holds other files, or a record made with other options.
    """
    options = dataclasses.asdict(cfg)
    options.pop("out_dir")
    if os.path.exists(paths.record):
        record = read_record(paths.record)
        changed = [f"{k}={record['options'].get(k)!r} (now {v!r})" for k, v in options.items()
                   if record["options"].get(k) != v]
        if changed:
            raise ValueError(f"{paths.out_dir} was made with other options: {', '.join(changed)}; "
                             "run with its options, or choose another --out_dir")
        return record
    others = sorted(set(os.listdir(paths.out_dir)) - {LOCK})
    if others:
        raise ValueError(f"{paths.out_dir} holds files that chat_pipeline.py did not write ({', '.join(others[:3])}"
                         f"{', ...' if len(others) > 3 else ''}): choose another --out_dir")
    record = {"options": options, "stages": {}}
    write_json(paths.record, record)
    return record


def read_record(path):
    """The record in path; ValueError if it is not one that chat_pipeline.py writes."""
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} ({e}): delete it to start the pipeline over") from None
    if not (isinstance(record, dict) and isinstance(record.get("options"), dict)
            and isinstance(record.get("stages"), dict)):
        raise ValueError(f"{path} is not a chat_pipeline.py record: choose another --out_dir")
    return record


def write_json(path, obj):
    """Write obj as indented JSON to path, atomically."""
    with atomic_write(path) as fh:
        fh.write((json.dumps(obj, indent=1) + "\n").encode("utf-8"))


# ---- stages: each takes (cfg, paths, record) and returns its record ---------------------------
def build_data(cfg, paths, record):
    """The pre-training text and the chat tasks, written into out_dir/data."""
    manifest = build_tasks(paths.data, max_chars=cfg.max_chars, seed=cfg.seed,
                           counts=counts_of(cfg), eval_limit=cfg.eval_items or None)
    text = pretraining_text()
    with atomic_write(paths.pretrain_text) as fh:
        fh.write(text.encode("utf-8"))
    return {"manifest": manifest, "pretrain_chars": len(text)}


def pretrain(cfg, paths, record):
    """Train the base model from scratch on the pre-training text."""
    return train_stage(cfg, paths.pretrain, init_from="scratch", data_file=paths.pretrain_text,
                       max_iters=cfg.pretrain_iters, batch_size=cfg.pretrain_batch_size,
                       learning_rate=cfg.pretrain_lr)


def finetune(cfg, paths, record):
    """Fine-tune the pre-trained model on the task mixture, in the chat format."""
    return train_stage(cfg, paths.chat, init_from=paths.pretrain, chat_file=os.path.join(paths.data, "train.jsonl"),
                       max_iters=cfg.finetune_iters, batch_size=cfg.finetune_batch_size,
                       learning_rate=cfg.finetune_lr)


def evaluate_before(cfg, paths, record):
    """Every task on the pre-trained model, prompted in plain text."""
    model, tokenizer, _ = load_model(paths.pretrain)
    return evaluate.pretrained(model, tokenizer, paths.data, eval_options(cfg))


def evaluate_after(cfg, paths, record):
    """Every task on the chat model, prompted in the chat format."""
    model, tokenizer, _ = load_model(paths.chat)
    return evaluate.chat(model, tokenizer, paths.data, eval_options(cfg))


def write_report(cfg, paths, record):
    """report.json and REPORT.md from the records of the stages before."""
    report.write(paths.out_dir, record, command=command_of(cfg))
    return {}


def command_of(cfg):
    """The command that runs `cfg`: python chat_pipeline.py and each option that differs from its default."""
    changed = [f"--{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
               if getattr(cfg, f.name) != f.default]
    return " ".join(["python", "chat_pipeline.py", *changed])


STAGES = (("data", build_data), ("pretrain", pretrain), ("before", evaluate_before),
          ("finetune", finetune), ("after", evaluate_after), ("report", write_report))


def eval_options(cfg):
    """The evaluation options of the pipeline's config."""
    return evaluate.EvalOptions(items=cfg.eval_items, batch_size=cfg.eval_batch_size, shots=cfg.shots,
                                max_new_tokens=cfg.max_new_tokens, samples=cfg.samples, seed=cfg.seed)


# ---- training through train.py's Trainer ------------------------------------------------------
class PipelineTrainer(Trainer):
    """train.py's Trainer, whose new tokenizer covers every task's text and holds the chat tokens.

    A character vocabulary of the pre-training text alone could lack a character of a held-out
    play; the tasks' ALPHABET covers them all. The chat tokens are there from the start, so the
    vocabulary is the same for the whole life of the model.
    """

    def _new_tokenizer(self, text):
        if self.cfg.tokenizer == "char":
            return add_chat_tokens(CharTokenizer(sorted(ALPHABET)))
        return add_chat_tokens(BPETokenizer.train(text, self.cfg.bpe_vocab_size))


def train_stage(cfg, out_dir, init_from, max_iters, **options):
    """Run one training stage into out_dir, continuing its checkpoint if one is there; its record.

    Exits with EXIT_INTERRUPTED if the run was stopped (Ctrl-C) before max_iters: the checkpoint
    is saved and the next run of the pipeline continues it.
    """
    resumed = os.path.exists(os.path.join(out_dir, FILENAME))
    tc = TrainConfig(out_dir=out_dir, init_from="resume" if resumed else init_from, max_iters=max_iters,
                     lr_decay_iters=max_iters, min_lr=options["learning_rate"] / 10, warmup_iters=cfg.warmup_iters,
                     eval_interval=cfg.eval_interval, eval_iters=cfg.eval_iters, log_interval=cfg.log_interval,
                     tokenizer=cfg.tokenizer, bpe_vocab_size=cfg.bpe_vocab_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size, seed=cfg.seed,
                     tie_embeddings=cfg.tie_embeddings, embedding_init_std=cfg.embedding_init_std, **options)
    os.makedirs(out_dir, exist_ok=True)
    trainer = PipelineTrainer(tc)
    start = trainer.iter_num
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.run()  # turns Ctrl-C into a checkpoint and a return
    finally:
        for sig, handler in handlers.items():  # Ctrl-C stops the later stages again
            signal.signal(sig, handler)
    if trainer.iter_num < max_iters:
        print(f"stopped at iteration {trainer.iter_num} of {max_iters}; run the same command again to continue")
        sys.exit(EXIT_INTERRUPTED)
    return {"iters": max_iters, "resumed_at": start if resumed else None, "params": trainer.model.num_params(),
            "vocab_size": trainer.model.config.vocab_size, "best_val_loss": trainer.best_val,
            **training_curve(out_dir)}


def training_curve(out_dir):
    """{"evals": [[iter, train loss, val loss], ...], "ms_per_iter": median} from a run's metrics.jsonl."""
    with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    evals = [[r["iter"], r["train_loss"], r["val_loss"]] for r in rows if "val_loss" in r]
    times = sorted(r["ms_per_iter"] for r in rows if "ms_per_iter" in r)
    return {"evals": evals, "ms_per_iter": times[len(times) // 2] if times else None}


if __name__ == "__main__":
    run_main(main)
