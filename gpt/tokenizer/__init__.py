"""Tokenizers: character-level and byte-level BPE (GPT-2 compatible), with one interface.

    tok = CharTokenizer.train(text)
    tok = BPETokenizer.train(text, vocab_size=4096)            # or .from_gpt2(vocab_json, merges_txt)
    ids = tok.encode(text); text = tok.decode(ids); tok.vocab_size; tok.eot_token
    tok.save(path); tok = load_tokenizer(path)                  # JSON; also to_json/load_tokenizer_json
    encode_file(tok, "input.txt", "train.bin")                  # streams a large file to uint16/uint32

See base.py (interface, specials, file format), char.py, bpe.py (training and encoding),
gpt2.py (GPT-2's vocab.json/merges.txt), symbols.py (named ids for synthetic tasks),
stream.py (large files into .bin files).
"""
from .base import TokenizerError, load_tokenizer, load_tokenizer_json, token_dtype
from .bpe import PATTERNS, BPETokenizer
from .char import CharTokenizer
from .symbols import SymbolTokenizer
from .stream import encode_file

__all__ = ["BPETokenizer", "CharTokenizer", "PATTERNS", "SymbolTokenizer", "TokenizerError", "encode_file",
           "load_tokenizer", "load_tokenizer_json", "token_dtype"]
