"""Hugging Face GPT-2 interop: weight mapping, and whole model directories in and out.

    model, tokenizer = gpt.hf.load("gpt2-dir")          # a GPT-2 directory, NumPy only
    gpt.hf.save(model, tokenizer, "export-dir")          # loadable by transformers' from_pretrained
    model, tokenizer = gpt.hf.load_pretrained(path)      # a GPT-2 directory or one of our checkpoints

A GPT-2 directory holds
  config.json        GPT2Config: model_type "gpt2", n_layer, n_head, n_embd, n_positions, vocab_size
  model.safetensors  the weights (read by gpt/safetensors.py: bounded header, never pickle)
  the tokenizer      vocab.json + merges.txt (as the published gpt2, distilgpt2, gpt2-medium carry),
                     or tokenizer.json alone (as transformers 5 writes): its model.vocab and model.merges
and `save` writes config.json, model.safetensors, vocab.json, merges.txt and the small
tokenizer_config.json that lets AutoTokenizer pick GPT-2's tokenizer class. A tokenizer with
the chat tokens (gpt/chat/template.py) also gets its specials as added tokens and the
chat_template (Jinja) there, so apply_chat_template renders our format; `load` reads those
specials back from added_tokens_decoder.

Weights. Our parameter names are GPT-2's (`transformer.h.0.attn.c_attn.weight`, ...), so the
conversion is small: HF's GPT-2 stores its four matmul weights as Conv1D, (in, out), where
our Linear is (out, in), so those are transposed; `lm_head.weight` is dropped because it is
tied to `transformer.wte.weight`, unless config.json says `tie_word_embeddings: false`: then
it is our `unembed.weight` (GPTConfig.tie_embeddings=False). The attention-mask buffers
older checkpoints save (`attn.bias`, `attn.masked_bias`) are dropped. GPT2Model saves names
without the `transformer.` prefix and GPT2LMHeadModel with it; both are accepted.

Bad input (a missing file, another architecture, a tensor of the wrong name, shape or dtype,
a corrupt safetensors header) raises a one-line HFError (or SafetensorsError, TokenizerError)
naming the file and the key or tensor. Everything is read and checked before a model is
built, and the model's load_state_dict is all-or-nothing, so nothing half-loaded is returned.

Left out: sharded checkpoints (model.safetensors.index.json), pytorch_model.bin (pickle),
GPT-2 variants with other attention scalings; our single `dropout`
takes GPT-2's resid_pdrop (there is no attention dropout here).
"""
import json
import os
import warnings

import numpy as np

from nanograd import backend

from .chat.template import ChatTemplate, has_chat_template
from .checkpoint import check_state, load_checkpoint
from .model import GPT, GPTConfig
from .safetensors import load_file, save_file, write_file
from .tokenizer import PATTERNS, BPETokenizer, TokenizerError
from .tokenizer.gpt2 import parse_merge, parse_vocab

HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_UNEMBED, UNEMBED = "lm_head.weight", "unembed.weight"  # the output layer: HF's name, ours (when untied)
HF_DROPPED = (HF_UNEMBED, ".attn.bias", ".attn.masked_bias")  # a tied output layer, mask buffers
PREFIX = "transformer."
CONFIG, WEIGHTS, TOKENIZER_CONFIG = "config.json", "model.safetensors", "tokenizer_config.json"
VOCAB, MERGES, TOKENIZER_JSON = "vocab.json", "merges.txt", "tokenizer.json"
CHAT_TEMPLATE = "chat_template.jinja"  # where transformers 5 saves a chat template
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # GPT-2's GELU, the tanh approximation ours computes
EOT = "<|endoftext|>"


class HFError(ValueError):
    """A directory that is not a GPT-2 checkpoint we can read, or a model we cannot export."""


# ---- weight mapping -----------------------------------------------------------------------
def state_dict_from_hf(tensors):
    """{our name: array} from HF GPT-2 tensors {name: array}; Conv1D weights transposed to (out, in)."""
    state = {}
    for name, array in tensors.items():
        if name.endswith(HF_DROPPED):
            continue
        name = name if name.startswith(PREFIX) else PREFIX + name
        state[name] = _transposed(name, np.asarray(array))
    return state


def state_dict_to_hf(state):
    """HF GPT2LMHeadModel tensors {name: array} from our state dict: Conv1D weights back to (in, out)."""
    return {HF_UNEMBED if name == UNEMBED else name: _transposed(name, np.asarray(array))
            for name, array in state.items()}


def _transposed(name, array):
    """A contiguous transpose for the Conv1D weights (safetensors needs contiguous data), else the array."""
    return np.ascontiguousarray(array.T) if name.endswith(HF_TRANSPOSED) else array


# ---- loading ------------------------------------------------------------------------------
def load(directory, device="cpu"):
    """(GPT in eval mode on `device`, BPETokenizer) from a Hugging Face GPT-2 directory."""
    config, state, tokenizer = read(directory)
    return build(config, state, directory).to(device).eval(), tokenizer


def read(directory):
    """(GPTConfig, {our name: float array}, BPETokenizer) from a GPT-2 directory, each file checked."""
    if not os.path.isdir(directory):
        raise HFError(f"{directory}: not a directory (expected a GPT-2 directory with {CONFIG} and {WEIGHTS})")
    config = read_config(os.path.join(directory, CONFIG))
    tokenizer = read_tokenizer(directory)
    if tokenizer.vocab_size > config.vocab_size:
        raise HFError(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but {CONFIG} says "
                      f"vocab_size={config.vocab_size}")
    return config, read_weights(os.path.join(directory, WEIGHTS), config.tie_embeddings), tokenizer


def build(config, state, source):
    """A GPT(config) holding `state`; HFError naming `source` and the tensor if the state does not fit.

    The state is checked against the config before the model is built, so a config.json that
    claims a larger model than its weights allocates nothing.
    """
    try:
        check_state(state, config)
    except ValueError as e:
        raise HFError(f"{source}: {e}") from None
    model = GPT(config)
    model.load_state_dict(state)
    return model


def read_config(path):
    """GPTConfig from a GPT-2 config.json; HFError naming the key for anything GPT-2 ours cannot run."""
    d = _read_json(path)
    if d.get("model_type") != "gpt2":
        raise HFError(f"{path}: model_type {d.get('model_type')!r:.80} is not 'gpt2'; only GPT-2 checkpoints load")
    sizes = {"block_size": "n_positions", "vocab_size": "vocab_size", "n_layer": "n_layer", "n_head": "n_head",
             "n_embd": "n_embd"}
    for key in sizes.values():
        if not isinstance(d.get(key), int) or isinstance(d.get(key), bool):
            raise HFError(f"{path}: {key} is {d.get(key)!r:.80}, expected an integer")
    dropout = d.get("resid_pdrop", 0.0)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool):
        raise HFError(f"{path}: resid_pdrop is {dropout!r:.80}, expected a number")
    expected = {"activation_function": TANH_GELUS, "layer_norm_epsilon": (1e-5,), "scale_attn_weights": (True,),
                "scale_attn_by_inverse_layer_idx": (False,), "add_cross_attention": (False,),
                "tie_word_embeddings": (True, False), "n_inner": (None, 4 * d.get("n_embd", 0))}
    for key, allowed in expected.items():
        if d.get(key, allowed[0]) not in allowed:
            raise HFError(f"{path}: {key}={d[key]!r:.80} is not supported (expected {' or '.join(map(repr, allowed))})")
    try:
        return GPTConfig(**{ours: d[theirs] for ours, theirs in sizes.items()}, dropout=dropout,
                         tie_embeddings=d.get("tie_word_embeddings", True))
    except ValueError as e:
        raise HFError(f"{path}: {e}") from None


def read_weights(path, tied=True):
    """{our name: float array} from model.safetensors: names mapped, Conv1D weights transposed.

    tied: config.json's tie_word_embeddings. A tied file's lm_head.weight, if saved, must equal
    the token embedding; an untied file's is the output layer, our unembed.weight.
    """
    if not os.path.exists(path):
        raise HFError(f"{path} is missing (pytorch_model.bin is pickle, which this loader does not read; "
                      "convert it to safetensors first)")
    tensors = load_file(path)
    for name, array in tensors.items():
        if name.endswith(HF_DROPPED):
            continue
        if array.dtype.kind != "f":
            raise HFError(f"{path}: tensor {name!r} has dtype {array.dtype}, expected floating point")
    if not tied:
        if HF_UNEMBED not in tensors or tensors[HF_UNEMBED].dtype.kind != "f":
            raise HFError(f"{path}: config.json says tie_word_embeddings=false but there is no floating-point "
                          f"tensor {HF_UNEMBED!r} (the output layer)")
        return {**state_dict_from_hf(tensors), UNEMBED: np.asarray(tensors[HF_UNEMBED])}
    if HF_UNEMBED in tensors:
        wte = tensors.get("transformer.wte.weight", tensors.get("wte.weight"))
        if wte is None or not np.array_equal(tensors[HF_UNEMBED], wte):
            raise HFError(f"{path}: tensor {HF_UNEMBED!r} differs from the token embedding but config.json "
                          "says tie_word_embeddings=true; set it to false if the output layer is its own")
    return state_dict_from_hf(tensors)


def read_tokenizer(directory):
    """BPETokenizer from vocab.json + merges.txt, else from tokenizer.json's model.vocab and model.merges."""
    vocab, merges, tokenizer_json = (os.path.join(directory, f) for f in (VOCAB, MERGES, TOKENIZER_JSON))
    try:
        if os.path.exists(vocab) or os.path.exists(merges):
            for path in (vocab, merges):
                if not os.path.exists(path):
                    raise HFError(f"{path} is missing ({VOCAB} and {MERGES} go together)")
            return _check_chat_template(directory, BPETokenizer.from_gpt2(vocab, merges, added_specials(directory)))
        if os.path.exists(tokenizer_json):
            return _check_chat_template(directory, _tokenizer_from_json(tokenizer_json))
    except TokenizerError as e:
        raise HFError(f"{directory}: tokenizer: {e}") from None
    raise HFError(f"{directory}: no tokenizer (expected {VOCAB} + {MERGES}, or {TOKENIZER_JSON})")


def _tokenizer_config(directory):
    """tokenizer_config.json's object, or {} when the directory has none."""
    path = os.path.join(directory, TOKENIZER_CONFIG)
    return _read_json(path) if os.path.exists(path) else {}


def added_specials(directory):
    """<|endoftext|> and every special token tokenizer_config.json's added_tokens_decoder lists
    (the chat tokens of a model `save` exported): the vocab.json entries that are specials."""
    added = _tokenizer_config(directory).get("added_tokens_decoder")
    listed = [t["content"] for t in added.values() if isinstance(t, dict) and t.get("special")
              and isinstance(t.get("content"), str)] if isinstance(added, dict) else []
    return tuple(dict.fromkeys([EOT, *listed]))


def _check_chat_template(directory, tokenizer):
    """`tokenizer`, after a warning if the directory's chat template (tokenizer_config.json's
    chat_template, or chat_template.jinja as transformers 5 saves it) is not the one gpt.chat
    renders (which is then ignored: conversations always use gpt/chat/template.py's layout)."""
    template, path = _tokenizer_config(directory).get("chat_template"), os.path.join(directory, CHAT_TEMPLATE)
    if template is None and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            template = f.read()
    if template is not None and template != ChatTemplate.jinja:
        warnings.warn(f"{directory}: its chat_template is not this project's (<|role|>content<|end|>); "
                      "gpt.chat renders conversations with its own and ignores it", stacklevel=3)
    return tokenizer


def _tokenizer_from_json(path):
    """BPETokenizer from a Hugging Face tokenizer.json holding a byte-level BPE model."""
    d = _read_json(path)
    model, pre_tokenizer = d.get("model"), d.get("pre_tokenizer")
    if not (isinstance(model, dict) and model.get("type") == "BPE" and isinstance(pre_tokenizer, dict)
            and pre_tokenizer.get("type") == "ByteLevel"):
        raise HFError(f"{path}: not a byte-level BPE tokenizer (model.type must be 'BPE', pre_tokenizer 'ByteLevel')")
    vocab, merges, added = model.get("vocab"), model.get("merges"), d.get("added_tokens") or []
    if not (isinstance(vocab, dict) and isinstance(merges, list) and isinstance(added, list)
            and all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in added)):
        raise HFError(f"{path}: model.vocab must be an object, model.merges a list and added_tokens a list of "
                      "objects with a string content")
    vocab = dict(vocab)
    specials = {t["content"]: vocab.pop(t["content"], t.get("id")) for t in added if t.get("special")}
    merges = [parse_merge(" ".join(m) if isinstance(m, list) and all(isinstance(p, str) for p in m) else m,
                          f"{path}, merge {r}") for r, m in enumerate(merges)]
    return BPETokenizer(parse_vocab(vocab, f"{path}, model.vocab"), merges, specials)


def _read_json(path):
    """The JSON object in `path`; HFError if it is missing or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise HFError(f"{path} is missing") from None
    except (OSError, ValueError, RecursionError) as e:  # bad UTF-8 or JSON, 4300+ digit integers, deep nesting
        raise HFError(f"{path}: not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise HFError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


# ---- either kind --------------------------------------------------------------------------
def is_hf_dir(path):
    """True for a directory holding config.json (our run directories hold ckpt.safetensors instead)."""
    return os.path.isfile(os.path.join(path, CONFIG))


def read_pretrained(path):
    """(GPTConfig, state dict, tokenizer) from a GPT-2 directory or one of our checkpoints (file or run dir)."""
    if not os.path.exists(path):
        raise HFError(f"no checkpoint or GPT-2 directory at {path}: train one with `python train.py`, "
                      "or point --out_dir or --init_from at one")
    if is_hf_dir(path):
        return read(path)
    ckpt = load_checkpoint(path)
    return ckpt.model_config, ckpt.model_state, ckpt.tokenizer


def load_pretrained(path, device="cpu"):
    """(GPT in eval mode on `device`, tokenizer) from a GPT-2 directory or one of our checkpoints."""
    config, state, tokenizer = read_pretrained(path)
    return build(config, state, path).to(device).eval(), tokenizer


# ---- saving -------------------------------------------------------------------------------
def chat_tokenizer_config(tokenizer):
    """The tokenizer_config.json entries of a tokenizer with the chat tokens (else {}): every
    special token as an added token (so HF never splits one) and the chat_template."""
    if not has_chat_template(tokenizer):
        return {}
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for s, i in tokenizer.special_tokens.items()}
    return {"added_tokens_decoder": added, "chat_template": ChatTemplate.jinja}


def save(model, tokenizer, directory):
    """Write `model` and its byte-level BPE `tokenizer` as a GPT-2 directory transformers can load."""
    c = model.config
    if not isinstance(tokenizer, BPETokenizer) or tokenizer.pattern != PATTERNS["gpt2"]:
        raise HFError(f"cannot export a {type(tokenizer).__name__} as GPT-2's tokenizer: it needs a byte-level "
                      "BPE with GPT-2's pattern (train with tokenizer='bpe' or 'gpt2')")
    if not c.bias:
        raise HFError("cannot export a model with bias=False: GPT-2 always has biases")
    if c.attn_only:
        raise HFError("cannot export an attention-only model (attn_only=True): every GPT-2 block has an MLP")
    if tokenizer.vocab_size > c.vocab_size:
        raise HFError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's {c.vocab_size}")
    os.makedirs(directory, exist_ok=True)
    tokenizer.save_gpt2(directory)
    eot = tokenizer.eot_token
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
              "n_positions": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
              "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": 0.0,
              "initializer_range": 0.02, "tie_word_embeddings": c.tie_embeddings,
              "bos_token_id": eot, "eos_token_id": eot}
    specials = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT} if eot is not None else {}
    tokenizer_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": c.block_size,
                        "add_prefix_space": False, **specials, **chat_tokenizer_config(tokenizer)}
    for name, content in ((CONFIG, config), (TOKENIZER_CONFIG, tokenizer_config)):
        write_file(os.path.join(directory, name), json.dumps(content, indent=2).encode("utf-8"))
    state = {k: backend.to_device(v, "cpu") for k, v in model.state_dict().items()}
    save_file(state_dict_to_hf(state), os.path.join(directory, WEIGHTS), metadata={"format": "pt"})
