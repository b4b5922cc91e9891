"""The report card of a chat pipeline run: report.json for programs, REPORT.md for people.

    write("out-chat", record, command="python chat_pipeline.py")

`record` is chat_pipeline.py's run record {"options", "stages": {name: {"seconds", ...}}}, whose
"before" and "after" stages hold gpt.chat.evaluate's results. report.json holds:

    tasks      {task: the chat model's metrics, with the pre-trained model's under "before"};
               dialogue's reply_loss_pretrained is the pre-trained model's loss on the replies
    goals      [{task, metric, goal, value, target, met, missed_by}]: each goal, reached or by how much missed
    induction  {"before", "after"}: the best induction head's score and the in-context loss drop
    stages     {name: seconds (wall), cpu_seconds (the process's, all threads), losses, iterations, ...};
               total_seconds and total_cpu_seconds, their sums
    samples    {"before", "after"}: a few held-out conversations per task
    command, date, hardware (CPU model, SIMD level, cores), options

Like nanochat's report card, REPORT.md puts each stage's time and losses, each task's numbers
beside its baselines, and a few conversations on one page.

Left out: plots, comparisons across runs.
"""
import datetime
import json
import os

from ..safetensors import atomic_write

JSON, MARKDOWN = "report.json", "REPORT.md"


def write(out_dir, record, command):
    """Write out_dir/report.json and out_dir/REPORT.md from the run record; returns the report dict."""
    card = build(record, command)
    with atomic_write(os.path.join(out_dir, JSON)) as fh:
        fh.write((json.dumps(card, indent=1) + "\n").encode("utf-8"))
    with atomic_write(os.path.join(out_dir, MARKDOWN)) as fh:
        fh.write(markdown(card).encode("utf-8"))
    return card


def build(record, command):
    """The report dict (see the module docstring) of a run record whose evaluation stages are done."""
    stages = record["stages"]
    before, after = stages["before"], stages["after"]
    tasks = {task: {**metrics, "before": before["tasks"][task]} for task, metrics in after["tasks"].items()}
    tasks["dialogue"]["reply_loss_pretrained"] = before["tasks"]["dialogue"]["reply_loss"]
    kept = {name: {k: v for k, v in stage.items() if k not in ("tasks", "samples")} for name, stage in stages.items()}
    return {"command": command, "date": datetime.date.today().isoformat(), "hardware": hardware(),
            "options": record["options"], "total_seconds": sum(s["seconds"] for s in stages.values()),
            "total_cpu_seconds": sum(s.get("cpu_seconds", 0) for s in stages.values()),
            "tasks": tasks, "goals": goals(tasks),
            "induction": {when: {k: stages[when][k] for k in ("induction_score", "icl_loss_drop")}
                          for when in ("before", "after")},
            "stages": kept, "samples": {"before": before["samples"], "after": after["samples"]}}


def goals(tasks):
    """Each goal of the held-out tasks: the value reached, the target, whether it is met and by how much not."""
    t = tasks
    translation_target = min(t["translation"]["cer_identity"] / 2, t["translation"]["cer_dictionary"])
    rows = [("translation", "cer", "at most half the identity's CER and below the dictionary's",
             t["translation"]["cer"], translation_target, "max"),
            ("qa", "exact_match", "at least 0.9", t["qa"]["exact_match"], 0.9, "min"),
            ("summarization", "exact_match", "at least 0.8", t["summarization"]["exact_match"], 0.8, "min"),
            ("dialogue", "well_formed", "at least 0.95", t["dialogue"]["well_formed"], 0.95, "min"),
            ("dialogue", "reply_loss", "within 5% of the pre-trained model's", t["dialogue"]["reply_loss"],
             1.05 * t["dialogue"]["reply_loss_pretrained"], "max")]
    out = []
    for task, metric, goal, value, target, kind in rows:
        met = value <= target if kind == "max" else value >= target
        out.append({"task": task, "metric": metric, "goal": goal, "value": value, "target": target, "met": met,
                    "missed_by": 0.0 if met else abs(value - target)})
    return out


def hardware():
    """{"cpu": model name, "simd": "AVX-512", "AVX2" or "", "cores": logical CPUs} from /proc/cpuinfo."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return {"cpu": model, "simd": simd, "cores": os.cpu_count()}


# ---- REPORT.md ------------------------------------------------------------------------------------
def markdown(card):
    """REPORT.md's text: the run, the stages, the tasks and goals, induction, sample conversations."""
    hw = card["hardware"]
    lines = ["# Chat model report card", "",
             f"`{card['command']}` on {card['date']}, {hw['cpu']} ({hw['simd'] or 'no AVX2'}, {hw['cores']} cores): "
             f"{minutes(card['total_seconds'])} in all ({minutes(card['total_cpu_seconds'])} of CPU time). "
             "Every task is scored on the held-out plays (hamlet, macbeth, tempest), decoding greedily.", "",
             "## Stages", "", "Wall time, and the CPU time of the process (all its threads).", "",
             "| stage | wall time | CPU time | what it did |", "|---|---|---|---|"]
    lines += [f"| {name} | {minutes(stage['seconds'])} | {cpu_time(stage)} | "
              f"{stage_summary(name, stage)} |" for name, stage in card["stages"].items()]
    lines += ["", "## Tasks", "", "| task | metric | before fine-tuning | after | baselines |", "|---|---|---|---|---|"]
    lines += task_rows(card["tasks"])
    lines += ["", "## Goals", "", "| task | metric | goal | reached | met |", "|---|---|---|---|---|"]
    lines += [f"| {g['task']} | {g['metric']} | {g['goal']} ({g['target']:.3f}) | {g['value']:.3f} | {met(g)} |"
              for g in card["goals"]]
    ind = card["induction"]
    lines += ["", "## Induction heads", "",
              "The best head's induction score on repeated random tokens (gpt.interp.emergence_metrics) and "
              "the in-context loss drop:", "",
              f"- pre-trained model: {ind['before']['induction_score']:.3f} "
              f"(loss drop {ind['before']['icl_loss_drop']:.3f})",
              f"- chat model: {ind['after']['induction_score']:.3f} (loss drop {ind['after']['icl_loss_drop']:.3f})",
              "", "## Sample conversations (held-out plays)", ""]
    for task, samples in card["samples"]["after"].items():
        lines += [f"### {task}", ""]
        for s in samples:
            lines += conversation_lines(s) + [""]
    return "\n".join(lines) + "\n"


def minutes(seconds):
    """"12 min 5 s" or "42 s"."""
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def cpu_time(stage):
    """A stage's CPU time, or "not measured" in a record written before it was."""
    return minutes(stage["cpu_seconds"]) if "cpu_seconds" in stage else "not measured"


def met(goal):
    """"yes", or "no: missed by 0.123"."""
    return "yes" if goal["met"] else f"no: missed by {goal['missed_by']:.3f}"


def stage_summary(name, stage):
    """One table cell saying what a stage did."""
    if "evals" in stage:  # a training stage
        it, train, val = stage["evals"][-1]
        ms = f", {stage['ms_per_iter']:.0f} ms/step" if stage.get("ms_per_iter") else ""
        resumed = f", resumed at step {stage['resumed_at']}" if stage.get("resumed_at") is not None else ""
        return (f"{stage['iters']} steps, {stage['params'] / 1e6:.2f}M parameters, vocab {stage['vocab_size']}: "
                f"train loss {stage['evals'][0][1]:.3f} -> {train:.3f}, val {val:.3f} "
                f"(best {stage['best_val_loss']:.3f}){ms}{resumed}")
    if name == "data":
        examples = stage["manifest"]["examples"]
        return "; ".join(f"{split}: " + ", ".join(f"{task} {n}" for task, n in per_task.items())
                         for split, per_task in examples.items())
    if name in ("before", "after"):
        return f"best induction head {stage['induction_score']:.3f}"
    return ""


def task_rows(tasks):
    """The tasks table's rows: each metric before and after fine-tuning, beside its baselines."""
    t = tasks
    fmt = "{:.3f}".format
    tr, qa = t["translation"], t["qa"]
    dia, gen = t["dialogue"], t["generation"]
    return [f"| translation | CER | {fmt(tr['before']['cer'])} | {fmt(tr['cer'])} | "
            f"identity {fmt(tr['cer_identity'])}, dictionary {fmt(tr['cer_dictionary'])} |",
            f"| qa | exact match | {fmt(qa['before']['exact_match'])} | {fmt(qa['exact_match'])} | most frequent "
            f"speaker {fmt(qa['exact_match_baseline'])} |",
            f"| summarization | exact match | {fmt(t['summarization']['before']['exact_match'])} | "
            f"{fmt(t['summarization']['exact_match'])} | |",
            f"| dialogue | reply loss (nats/token) | {fmt(dia['reply_loss_pretrained'])} (plays' layout) | "
            f"{fmt(dia['reply_loss'])} | |",
            f"| dialogue | well-formed replies | | {fmt(dia['well_formed'])} | |",
            f"| generation | loss (nats/token) | {fmt(gen['before']['loss'])} (plays' layout) | {fmt(gen['loss'])} | |"]


def conversation_lines(sample):
    """A sample conversation as Markdown lines: each message, the reply, and the reference."""
    lines = []
    for m in sample["messages"]:
        lines += quoted(f"**{m['role']}**: ", m["content"])
    lines += quoted("**assistant (chat model)**: ", sample["reply"] + ("" if sample["ended"] else " [no <|end|>]"))
    lines += quoted("**reference**: ", sample["reference"])
    return lines


def quoted(head, text):
    """A Markdown block quote of head + text, its lines kept as lines."""
    body = (head + text).split("\n")
    return [f"> {line}  " for line in body] + [">"]
