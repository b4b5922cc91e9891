"""The Shakespeare chat tasks scored on the held-out plays: the pre-trained model, then the chat model.

    options = EvalOptions(items=200, batch_size=32, shots=3, max_new_tokens=200)
    before = pretrained(model, tokenizer, "out-chat/data", options)   # few-shot prompts in plain text
    after = chat(chat_model, tokenizer, "out-chat/data", options)     # greedy replies in the chat format

Each returns {"tasks": {task: {metric: value}}, "samples": {task: [conversations]},
"induction_score": the best head's score, "icl_loss_drop": ...} (gpt.interp.emergence_metrics), read
from the files gpt.chat.tasks.build_tasks wrote: eval/<task>.jsonl (the first `items` of each,
which build_tasks shuffled) and val.jsonl (training plays, for the few-shot examples).

Before fine-tuning the model knows no chat format, so each question is plain text: solved
examples of the same task from val.jsonl, each "<user message>\\n<answer>\\n\\n", then
"<user message>\\n"; the answer is the first non-empty line of the greedy continuation. The
examples are the first of val.jsonl's (at most `shots`) that fit beside the question and its
answer's room in the context: a QA or summarization passage often leaves room for none.
After fine-tuning the chat model replies to each whole conversation greedily, batched
(gpt.chat.reply.generate_replies): prompts of similar lengths decode together, each batch
with the room its longest prompt leaves in the context (at most max_new_tokens); nothing is
trimmed, so the model sees every message, as in training.

Metrics (gpt.chat.metrics):
    translation    cer (corpus CER of the answers), cer_identity (the Folio line copied),
                   cer_dictionary (the word-substitution baseline)
    qa             exact_match, exact_match_baseline (the passage's most frequent speaker)
    summarization  exact_match
    dialogue       reply_loss: mean next-token loss on the assistant turns' content; before
                   fine-tuning, on the same characters in the plays' own layout (the record's
                   "plain" text and "reply_spans"); after, also well_formed: the share of
                   replies that end with <|end|> within their room (room_min: the least room)
    generation     loss: as dialogue's reply_loss, on the continuation
Every generated task also gets well_formed after fine-tuning. For the losses each piece
(reply or not) is encoded alone, so both layouts give a reply the same tokens; a text longer
than the context loses its start (targets there are not counted).

Left out: sampling (all decoding is greedy), confidence intervals, scoring by an LLM judge.
"""
import dataclasses
import json
import os

import numpy as np

from nanograd import functional as F

from ..generate import inference_mode
from ..interp import emergence_metrics
from . import metrics
from .reply import generate_replies, left_pad
from .template import ChatTemplate

GENERATED = ("translation", "qa", "summarization")  # scored on the model's answers before and after
SCORED_BY_LOSS = {"dialogue": "reply_loss", "generation": "loss"}
SHOT_CANDIDATES = 50  # solved examples tried, in order, for the few-shot prompts of each question


@dataclasses.dataclass
class EvalOptions:
    items: int = 200  # held-out items per task (0: all)
    batch_size: int = 32  # prompts decoded together
    shots: int = 3  # most solved examples before a plain-text question
    max_new_tokens: int = 200  # longest reply
    samples: int = 3  # conversations per task kept for the report
    seed: int = 0  # the induction probe's tokens


def pretrained(model, tokenizer, data_dir, options):
    """The pre-trained model's scores: few-shot plain-text answers, and losses in the plays' layout."""
    tasks, samples = {}, {}
    for task in GENERATED:
        items = eval_items(data_dir, task, options.items)
        answers, prompts, shots = few_shot_answers(model, tokenizer, items, shot_examples(data_dir, task), options)
        tasks[task] = {**score(task, items, answers), "shots": float(np.mean(shots))}
        samples[task] = [{"prompt": p, "reference": it["reference"], "reply": a}
                         for p, it, a in zip(prompts, items, answers)][:options.samples]
    for task, name in SCORED_BY_LOSS.items():
        items = eval_items(data_dir, task, options.items)
        rows = [encode_pieces(tokenizer, it["plain"], it["reply_spans"]) for it in items]
        tasks[task] = {name: mean_target_loss(model, rows, options.batch_size), "items": len(items)}
    return {"tasks": tasks, "samples": samples, **induction(model, options.seed)}


def chat(model, tokenizer, data_dir, options):
    """The chat model's scores: greedy replies to every conversation, and losses on the reference replies."""
    template = ChatTemplate(tokenizer)
    tasks, samples = {}, {}
    for task in (*GENERATED, "dialogue", "generation"):
        items = eval_items(data_dir, task, options.items)
        shown = items if task in (*GENERATED, "dialogue") else items[:options.samples]
        conversations = [it["messages"] for it in shown]
        replies, rooms = replies_in_room(model, template, conversations, options.max_new_tokens, options.batch_size)
        texts = [text for text, _ in replies]
        tasks[task] = score(task, shown, texts) if task in GENERATED else {"items": len(items)}
        if task != "generation":
            tasks[task]["well_formed"] = float(np.mean([reason == "end" for _, reason in replies]))
            tasks[task]["room_min"] = min(rooms)
        if task in SCORED_BY_LOSS:
            rows = [reply_targets(template, it) for it in items]
            tasks[task][SCORED_BY_LOSS[task]] = mean_target_loss(model, rows, options.batch_size)
        samples[task] = [{"messages": c, "reference": it["reference"], "reply": text, "ended": reason == "end"}
                         for c, it, (text, reason) in zip(conversations, shown, replies)][:options.samples]
    return {"tasks": tasks, "samples": samples, **induction(model, options.seed)}


# ---- the held-out items and the scores --------------------------------------------------------
def eval_items(data_dir, task, n):
    """The first n records (0: all) of data_dir/eval/<task>.jsonl."""
    with open(os.path.join(data_dir, "eval", f"{task}.jsonl"), encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    if not items:
        raise ValueError(f"{data_dir}/eval/{task}.jsonl has no items: build the tasks again")
    return items[:n] if n else items


def score(task, items, answers):
    """The metrics of one generated task: answers (strings) against the items' references and baselines."""
    refs = [it["reference"] for it in items]
    if task == "translation":
        return {"cer": metrics.corpus_cer(answers, refs),
                "cer_identity": metrics.corpus_cer([it["source"] for it in items], refs),
                "cer_dictionary": metrics.corpus_cer([it["dictionary"] for it in items], refs), "items": len(items)}
    scores = {"exact_match": float(np.mean([metrics.exact_match(a, r) for a, r in zip(answers, refs)])),
              "items": len(items)}
    if task == "qa":
        scores["exact_match_baseline"] = float(np.mean([metrics.exact_match(it["most_frequent_speaker"], r)
                                                        for it, r in zip(items, refs)]))
    return scores


def induction(model, seed):
    """The best induction head's score and the in-context loss drop on repeated random tokens."""
    found = emergence_metrics(model, seed=seed)
    return {"induction_score": found["induction_score"], "icl_loss_drop": found["icl_loss_drop"]}


# ---- before fine-tuning: plain text -------------------------------------------------------------
def shot_examples(data_dir, task):
    """[(user message, answer)] of `task` from data_dir/val.jsonl (training plays), in the file's order."""
    with open(os.path.join(data_dir, "val.jsonl"), encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh if line.strip()]
    return [(d["messages"][-2]["content"], d["messages"][-1]["content"]) for d in lines if d["task"] == task]


def few_shot_answers(model, tokenizer, items, shots, options):
    """(answers, prompts, shots used): each item's question after as many solved `shots` as fit, answered greedily."""
    room = max(len(tokenizer.encode(it["reference"])) for it in items) + 2  # the answer and blank lines
    budget = model.config.block_size - room
    prompts, used = [], []
    for it in items:
        question, chosen = f"{it['messages'][-1]['content']}\n", []
        for shot in shots[:SHOT_CANDIDATES]:
            if len(chosen) < options.shots and len(tokenizer.encode(plain_prompt(chosen + [shot], question))) <= budget:
                chosen.append(shot)
        prompts.append(plain_prompt(chosen, question))
        used.append(len(chosen))
    continuations = complete(model, [tokenizer.encode(p) for p in prompts], room, options.batch_size)
    return [first_line(tokenizer.decode(ids)) for ids in continuations], prompts, used


def plain_prompt(shots, question):
    """The solved examples, "<user message>\\n<answer>\\n\\n" each, then the question."""
    return "".join(f"{q}\n{a}\n\n" for q, a in shots) + question


def first_line(text):
    """The first non-empty line of text ("" if none)."""
    return next((line for line in text.split("\n") if line.strip()), "")


def complete(model, prompts, max_new_tokens, batch_size):
    """[new ids (max_new_tokens,)]: each prompt (a list of ids) continued greedily, batched, left-padded.

    A prompt longer than block_size - max_new_tokens loses its start (gpt.generate crops it).
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # little padding in a batch
    out = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        idx, attention_mask = left_pad([prompts[i][-(model.config.block_size - max_new_tokens):] for i in batch],
                                       pad_id=0)  # (B, T) each
        seq = model.generate(idx, max_new_tokens, temperature=0, attention_mask=attention_mask)  # (B, T + new)
        for row, i in enumerate(batch):
            out[i] = seq[row, idx.shape[1]:]
    return out


# ---- after fine-tuning: the chat format ---------------------------------------------------------
def replies_in_room(model, template, conversations, max_new_tokens, batch_size):
    """(replies [(text, reason)], rooms): greedy replies to the whole conversations, each batch of
    similar prompt lengths given the room its longest prompt leaves (at most max_new_tokens).

    Nothing is trimmed: the model sees every message, as in training.
    """
    lengths = [len(template.prompt_ids(c)) for c in conversations]
    order = sorted(range(len(conversations)), key=lambda i: lengths[i])
    replies, rooms = [None] * len(conversations), [0] * len(conversations)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        room = min(max_new_tokens, model.config.block_size - max(lengths[i] for i in batch))
        if room < 1:
            raise ValueError(f"a held-out conversation of {max(lengths[i] for i in batch)} tokens leaves no room for "
                             f"a reply in block_size={model.config.block_size}: use a larger block_size or a smaller "
                             "max_chars")
        for i, reply in zip(batch, generate_replies(model, template, [conversations[i] for i in batch], room,
                                                    batch_size, temperature=0)):
            replies[i], rooms[i] = reply, room
    return replies, rooms


def reply_targets(template, item):
    """(ids, mask) of an item's whole conversation in the chat format, the mask on the assistant content."""
    ids, mask = template.render(item["messages"] + [{"role": "assistant", "content": item["reference"]}])
    return ids, [m and i != template.end_id for i, m in zip(ids, mask)]


# ---- losses on chosen tokens ----------------------------------------------------------------------
def encode_pieces(tokenizer, text, spans):
    """(ids, mask): text encoded piece by piece, cut at the spans' ends; the mask on the spans' tokens."""
    ids, mask, at = [], [], 0
    for start, end in [*spans, (len(text), len(text))]:
        for piece, inside in ((text[at:start], False), (text[start:end], True)):
            piece_ids = tokenizer.encode(piece) if piece else []
            ids += piece_ids
            mask += [inside] * len(piece_ids)
        at = end
    return ids, mask


def mean_target_loss(model, rows, batch_size):
    """Mean next-token loss (nats per token) over the masked tokens of rows [(ids, mask)], batched.

    Each row is cut to its last block_size + 1 tokens and right-padded (a causal model's
    padding after a row never changes it); token i counts when mask[i], predicted from i - 1.
    """
    T = model.config.block_size + 1
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = [(ids[-T:], mask[-T:]) for ids, mask in rows[start:start + batch_size]]
        width = max(len(ids) for ids, _ in batch)
        x = np.zeros((len(batch), width - 1), dtype=np.int64)  # (B, W - 1) inputs
        y = np.full((len(batch), width - 1), -1, dtype=np.int64)  # (B, W - 1) targets, -1 not counted
        for r, (ids, mask) in enumerate(batch):
            x[r, :len(ids) - 1] = ids[:-1]
            y[r, :len(ids) - 1] = np.where(mask[1:], ids[1:], -1)
        with inference_mode(model):
            logits, _ = model(x)  # (B, W - 1, V)
            logp = F.log_softmax(logits).numpy()  # (B, W - 1, V)
        picked = np.take_along_axis(logp, np.maximum(y, 0)[..., None], axis=-1)[..., 0]  # (B, W - 1)
        total -= float(picked[y >= 0].sum())
        count += int((y >= 0).sum())
    return total / count
