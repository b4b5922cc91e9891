"""Talk with a chat model in the terminal, its replies streaming as they are generated.

    python chat.py                                   # the run chat_pipeline.py wrote (out-chat/)
    python chat.py --init_from=out-chat/ckpt.safetensors --system="Answer as Hamlet." --temperature=0.7
    python chat.py --prompt="Who is Ophelia?" --temperature=0      # prints the reply alone
    python chat.py --prompts_file=in.jsonl --temperature=0 > out.jsonl

The model is a run folder, checkpoint or GPT-2 directory whose tokenizer holds the chat
format's tokens (gpt/chat/template.py): one fine-tuned on conversations (train.py --chat_file).
In the chat, a line is your message and the model answers it; commands start with "/"
(/help lists them); Ctrl-D or Ctrl-C ends. The whole conversation is the prompt of each reply,
so once it outgrows the context (block_size, less max_new_tokens for the reply) its oldest
messages are dropped, with one line saying so; the --system message always stays.

Scripted modes: --prompt replies to one message and prints just the reply; --prompts_file reads
JSONL lines {"messages": [...]} and writes one line {"reply": "..."} per line, in order (blank
lines skipped), decoding --batch_size conversations at a time (gpt/chat/reply.py). At
--temperature=0 both give exactly the replies of the chat.

Left out: line editing and history recall (the terminal's own), saving a conversation.
"""
import dataclasses
import json
import sys

from gpt.chat import ChatTemplate, has_chat_template
from gpt.chat.dataset import read_conversations
from gpt.chat.reply import assistant_message, generate_replies, generate_reply, trim_history
from gpt.cli import run_main
from gpt.config import ConfigError, option, parse
from gpt.hf import load_pretrained
from sample import SamplingConfig, write

HELP = """commands:
  /reset       forget the conversation (the --system message stays)
  /temp <t>    set the sampling temperature (0: greedy)
  /help        this list
  /quit        leave (Ctrl-D and Ctrl-C too)"""


@dataclasses.dataclass
class ChatConfig(SamplingConfig):
    out_dir: str = option("out-chat", "run directory holding a chat model's ckpt.safetensors")
    max_new_tokens: int = option(0, "most tokens in one reply (0: half the model's context)", valid="[0, inf)")
    system: str = option("", "a system message that opens the conversation (empty: none)")
    prompt: str = option("", "reply to this one message, print the reply and exit")
    prompts_file: str = option("", "JSONL lines {\"messages\": [...]}: print one {\"reply\": ...} line per line")
    batch_size: int = option(32, "--prompts_file: conversations decoded together", valid="[1, inf)")

    def __post_init__(self):
        """Constraints between options (gpt.config.build checks each option's own range)."""
        if self.prompt and self.prompts_file:
            raise ConfigError("--prompt and --prompts_file are two modes: give one of them")
        if self.system and self.prompts_file:
            raise ConfigError("--system does not apply to --prompts_file: put a system message in its conversations")


def load_chat_model(cfg):
    """(model, ChatTemplate) from the run folder, checkpoint or GPT-2 directory cfg names."""
    path = cfg.model_path()
    model, tokenizer = load_pretrained(path, cfg.device)
    if not has_chat_template(tokenizer):
        raise ValueError(f"{path} has no chat template (its tokenizer lacks <|user|>, <|assistant|>, <|end|>): "
                         f"fine-tune it on conversations with `python train.py --init_from={path} "
                         "--chat_file=chats.jsonl --out_dir=out-chat`, or point --out_dir at a chat run "
                         "(chat_pipeline.py makes one)")
    return model, ChatTemplate(tokenizer)


def fit(template, messages, cfg, block_size, where):
    """messages trimmed to fit the context (trim_history), saying on stderr how many were dropped."""
    try:
        kept, dropped = trim_history(template, messages, block_size, cfg.max_new_tokens)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if dropped:
        print(f"{where}: dropped the {dropped} oldest messages to fit the context of {block_size} tokens",
              file=sys.stderr)
    return kept


def reply_to_file(model, template, cfg):
    """--prompts_file: one JSON line {"reply": ...} per conversation, in order."""
    conversations = read_conversations(cfg.prompts_file)
    for where, messages in conversations:  # every line checked before any is answered
        template.check(messages, where)
    conversations = [fit(template, messages, cfg, model.config.block_size, where) for where, messages in conversations]
    replies = generate_replies(model, template, conversations, cfg.max_new_tokens, batch_size=cfg.batch_size,
                               **cfg.sampling())
    for text, _ in replies:
        print(json.dumps({"reply": text}, ensure_ascii=False))


def reply_once(model, template, cfg, system):
    """--prompt: the reply to one message, streamed to stdout."""
    messages = system + [{"role": "user", "content": cfg.prompt}]
    generate_reply(model, template, messages, cfg.max_new_tokens, **cfg.sampling(), stream=write)
    print()


class Chat:
    """The interactive chat: the conversation so far, the sampling options, one turn per line."""

    def __init__(self, model, template, cfg, system):
        self.model, self.template, self.cfg, self.system = model, template, cfg, system
        self.messages, self.turn = list(system), 0

    def run(self, lines):
        """Read lines until /quit or their end; each is a command or a message to answer."""
        print(f"chatting with {self.cfg.model_path()} (context {self.model.config.block_size} tokens); "
              "/help lists the commands, /quit or Ctrl-D leaves")
        for line in lines:
            line = line.strip()
            if line == "/quit":
                return
            if line.startswith("/"):
                print(self.command(line))
            elif line:
                self.answer(line)

    def command(self, line):
        """Carry out a /command; the line to print."""
        name, _, argument = line.partition(" ")
        if name == "/reset":
            self.messages = list(self.system)
            return "(conversation forgotten)"
        if name == "/temp":
            try:
                temperature = float(argument)
            except ValueError:
                temperature = -1.0
            if not temperature >= 0:
                return f"(/temp needs a number >= 0, got {argument!r})"
            self.cfg = dataclasses.replace(self.cfg, temperature=temperature)
            return f"(temperature {temperature})"
        if name == "/help":
            return HELP
        return f"(unknown command {name}; /help lists them)"

    def answer(self, text):
        """Stream the model's reply to the message `text` and add both to the conversation."""
        block_size = self.model.config.block_size
        try:
            messages, dropped = trim_history(self.template, self.messages + [{"role": "user", "content": text}],
                                             block_size, self.cfg.max_new_tokens)
        except ValueError as e:  # the message alone is too long, or holds characters the tokenizer lacks
            print(f"(not sent: {e})")
            return
        if dropped:
            print(f"(dropped the {dropped} oldest messages to fit the context of {block_size} tokens)")
        sampling = {**self.cfg.sampling(), "seed": self.cfg.seed + self.turn}  # reproducible, different each turn
        self.turn += 1
        reply, reason = generate_reply(self.model, self.template, messages, self.cfg.max_new_tokens, **sampling,
                                       stream=write)
        print(f"\n(the reply reached max_new_tokens={self.cfg.max_new_tokens})" if reason == "length" else "")
        message = assistant_message(self.template, reply)
        if message["content"] != reply:
            print("(the reply spells a special token's text; the conversation keeps it without that text)")
        self.messages = messages + [message]


def read_lines(prompt="> "):
    """The lines typed at `prompt` until Ctrl-D."""
    while True:
        try:
            yield input(prompt)
        except EOFError:
            print()
            return


def main(argv):
    cfg = parse(ChatConfig, argv, "chat.py")
    model, template = load_chat_model(cfg)
    cfg.max_new_tokens = cfg.max_new_tokens or model.config.block_size // 2  # leaves half for the conversation
    system = [{"role": "system", "content": cfg.system}] if cfg.system else []
    if cfg.prompts_file:
        reply_to_file(model, template, cfg)
    elif cfg.prompt:
        reply_once(model, template, cfg, system)
    else:
        try:
            Chat(model, template, cfg, system).run(read_lines())
        except KeyboardInterrupt:  # Ctrl-C ends the chat as Ctrl-D does
            print()


if __name__ == "__main__":
    run_main(main)
