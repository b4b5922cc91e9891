"""Make a small labeled task from the Shakespeare text: "TL;DR:" lines naming who speaks in a scene.

    python scripts/make_tldr.py                    # writes out-finetune-tldr/tldr.jsonl
    python train.py configs/finetune_tldr.toml     # fine-tunes the CPU Shakespeare model on it
    python scripts/make_tldr.py --evaluate=out-finetune-tldr   # exact answers on held-out scenes

A scene is two consecutive speeches of a play, each cut to its speaker and the first words
of its first line, in the play text's own layout; its summary names the speakers in order:

    {"prompt": "KING.\\nFarewell, young lord\\n\\nBERTRAM.\\nI grow to you\\n\\nTL;DR:", "completion": " KING, BERTRAM"}

The model must copy the names it has just read into a new place, a format it never saw
in pre-training. Scenes are kept only if prompt, completion and the end token fit in
block_size + 1 characters, sampled with a fixed seed and written in random order, so the
last tenth (gpt/sft.py's validation split) is a random sample. Nothing is downloaded
beyond the Shakespeare text gpt/data.py provides. --evaluate decodes the validation
prompts greedily, up to the end token, and counts the answers equal to the completion.

Left out: scenes of more than two speeches (they do not fit the CPU model's 64-character
context), summaries of what is said.
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpt.data import load_text  # noqa: E402
from gpt.hf import load_pretrained  # noqa: E402
from gpt.sft import SFTDataset, end_token  # noqa: E402

SPEECH = re.compile(r"\n\n([A-Z][A-Z' ]*[A-Z])\.\n([^\n]+)")  # "\n\nKING.\nFirst line of the speech"


def speeches(text):
    """[(speaker, first line)] of every speech, in text order."""
    return SPEECH.findall(text)


def first_words(line, max_chars):
    """The longest run of whole words from the start of `line` within max_chars (at least one word)."""
    words, out = line.split(), ""
    for word in words:
        if out and len(out) + 1 + len(word) > max_chars:
            break
        out = f"{out} {word}" if out else word
    return out


def example(pair, max_words_chars):
    """{"prompt", "completion"} for two consecutive speeches [(speaker, line), (speaker, line)]."""
    scene = "\n\n".join(f"{speaker}.\n{first_words(line, max_words_chars)}" for speaker, line in pair)
    names = list(dict.fromkeys(speaker for speaker, _ in pair))  # in order of appearance, once each
    return {"prompt": f"{scene}\n\nTL;DR:", "completion": " " + ", ".join(names)}


def make_examples(text, n, block_size, max_words_chars=16, seed=0):
    """Up to n examples that fit in block_size + 1 characters (with the end token), in random order."""
    found = speeches(text)
    examples = [example(found[i:i + 2], max_words_chars) for i in range(len(found) - 1)]
    fitting = [e for e in examples if len(e["prompt"]) + len(e["completion"]) + 1 <= block_size + 1]
    order = np.random.default_rng(seed).permutation(len(fitting))[:n]
    return [fitting[i] for i in order]


def accuracy(model, tokenizer, path, limit):
    """(exact answers, scenes tried, [(prompt, answer)]) on the first `limit` validation scenes of `path`."""
    val = SFTDataset(path, tokenizer).splits["val"][:limit]
    eos, right, answers = end_token(tokenizer), 0, []
    for ids, prompt_length, _ in val:
        prompt = np.array([ids[:prompt_length]])
        room = model.config.block_size + 1 - prompt_length  # as much as any training completion had
        out = model.generate(prompt, room, temperature=0, eos_token_id=eos)
        right += out[0, prompt_length:].tolist() == ids[prompt_length:]
        answers.append((tokenizer.decode(ids[:prompt_length]), tokenizer.decode(out[0, prompt_length:].tolist())))
    return right, len(val), answers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out-finetune-tldr/tldr.jsonl", help="the JSONL file to write")
    parser.add_argument("--n", type=int, default=4000, help="examples to write")
    parser.add_argument("--block_size", type=int, default=64, help="the fine-tuned model's context")
    parser.add_argument("--evaluate", default="", help="a fine-tuned run directory: score it on --out's val split")
    parser.add_argument("--limit", type=int, default=200, help="validation scenes to score")
    args = parser.parse_args(argv)
    if args.evaluate:
        model, tokenizer = load_pretrained(args.evaluate)
        right, n, answers = accuracy(model, tokenizer, args.out, args.limit)
        for prompt, answer in answers[:3]:
            print(f"{prompt}{answer}")
        print(f"{right}/{n} held-out scenes answered exactly ({100 * right / n:.1f}%)")
        return
    examples = make_examples(load_text("shakespeare"), args.n, args.block_size)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e) + "\n" for e in examples)
    print(f"wrote {len(examples)} examples to {args.out}, e.g. {json.dumps(examples[0])}")


if __name__ == "__main__":
    main()
