"""Serve a model to a web page: chat with it, watch the reply stream in, and look inside it.

    pip install -e '.[web]' && python chat_web.py             # the run chat_pipeline.py wrote (out-chat/)
    python chat_web.py --out_dir=out-shakespeare-char-cpu      # any train.py run: the page continues text
    python chat_web.py --init_from=gpt2-dir --port=8080

Then open http://127.0.0.1:8000. The page streams each reply, stops it on request, and on a
click on any token shows each head's attention from it over the earlier tokens and what each
layer's logit lens predicts there (docs/web.md; the API is in gpt/web/server.py). A model
whose tokenizer has the chat tokens chats as chat.py does; any other continues the text of
your last message, and the page says so.

The server listens on 127.0.0.1 only, unless --host says otherwise: another host (0.0.0.0)
lets anyone who can reach this machine use the model. Ctrl-C stops it.

Left out: TLS and authentication (put a reverse proxy in front for those), several models.
"""
import dataclasses
import ipaddress
import sys

from gpt.cli import run_main
from gpt.config import option, parse
from gpt.web.served import ServedModel
from gpt.web.server import make_server


@dataclasses.dataclass
class WebConfig:
    out_dir: str = option("out-chat", "run directory holding the model's ckpt.safetensors")
    init_from: str = option("resume", "'resume' (the checkpoint in out_dir), a checkpoint, or a GPT-2 directory")
    host: str = option("127.0.0.1", "address to listen on; another than 127.0.0.1 exposes the model to the network")
    port: int = option(8000, "port to listen on (0: any free one)", valid="[0, 65535]")
    max_new_tokens: int = option(256, "the longest reply a request may ask for", valid="[1, inf)")
    max_batch: int = option(8, "replies decoded together (continuous batching); 1: one at a time", valid="[1, inf)")
    quiet: bool = option(False, "do not log each request")


def is_loopback(host):
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv):
    cfg = parse(WebConfig, argv, "chat_web.py")
    served = ServedModel.load(cfg.out_dir if cfg.init_from == "resume" else cfg.init_from)
    try:
        server = make_server(served, cfg.host, cfg.port, max_new_tokens=cfg.max_new_tokens,
                             max_batch=cfg.max_batch, quiet=cfg.quiet)
    except OSError as e:
        raise ValueError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror}; choose another --port") from None
    host, port = server.server_address[:2]
    mode = "chat" if served.chat else "no chat template: the page continues the text of your last message"
    print(f"serving {served.name} ({served.health()['n_params']:,} parameters; {mode}) at http://{host}:{port}")
    if not is_loopback(cfg.host):
        print(f"warning: --host={cfg.host} exposes the model to the network: anyone who can reach it can use it")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()


if __name__ == "__main__":
    run_main(main)
