"""gpt: a GPT-2 style language model built on nanograd, with everything around it.

The package holds the model (model.py) and its generation loop (generate.py), a byte-level
BPE tokenizer (tokenizer/), data loading (data.py), safetensors files and checkpoints
(safetensors.py, checkpoint.py), Hugging Face GPT-2 interop (hf.py) and command-line
configuration (config.py, cli.py). Nothing is imported here, so `import gpt.tokenizer`
stays light: import the submodule you need.
"""
