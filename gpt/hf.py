"""Hugging Face GPT-2 interop: convert weights between HF's names and layout and ours.

Our parameter names are GPT-2's (`transformer.h.0.attn.c_attn.weight`, ...), so the
conversion is small: HF's GPT-2 stores its four matmul weights as Conv1D, (in, out), where
our Linear is (out, in), so those are transposed; `lm_head.weight` is dropped because it is
tied to `transformer.wte.weight`; the attention-mask buffers older checkpoints save
(`attn.bias`, `attn.masked_bias`) are dropped. GPT2Model saves names without the
`transformer.` prefix and GPT2LMHeadModel with it; both are accepted.

Still to come (a later issue): loading a whole HF model directory (config.json plus
model.safetensors) into a GPT, and writing one.
"""
import numpy as np

HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_DROPPED = ("lm_head.weight", ".attn.bias", ".attn.masked_bias")  # tied output layer, mask buffers
PREFIX = "transformer."


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
    return {name: _transposed(name, np.asarray(array)) for name, array in state.items()}


def _transposed(name, array):
    """A contiguous transpose for the Conv1D weights (safetensors needs contiguous data), else the array."""
    return np.ascontiguousarray(array.T) if name.endswith(HF_TRANSPOSED) else array
