"""Hugging Face GPT-2 directories in and out: exactness against transformers, and bad input.

The exactness tests build a small random GPT2LMHeadModel and save it with transformers, with
a small byte-level BPE tokenizer (ours, trained on a few lines) written the two ways GPT-2
directories carry one: tokenizer.json (transformers 5's save_pretrained) and vocab.json +
merges.txt (the published checkpoints). They skip without torch and transformers. The
bad-input tests need neither: they corrupt a directory our own `save` wrote.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import nanograd as ng
from gpt import hf
from gpt.model import GPT, GPTConfig
from gpt.safetensors import load_file, save_file
from gpt.tokenizer import BPETokenizer, CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT = "".join(f"The quick brown fox {i} jumps over the lazy dog; the dog sleeps. " for i in range(40))
N_POSITIONS = 48


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXT, 300)


@pytest.fixture(scope="module")
def transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead
    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, transformers, bpe):
    """(directory saved by transformers with tokenizer.json only, the HF model, the HF tokenizer)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    d = str(tmp_path_factory.mktemp("hf"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=N_POSITIONS,
                                     vocab_size=bpe.vocab_size, initializer_range=0.2,
                                     bos_token_id=bpe.eot_token, eos_token_id=bpe.eot_token)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(d)
    vocab_path, merges_path = bpe.save_gpt2(str(tmp_path_factory.mktemp("files")))
    with open(merges_path, encoding="utf-8") as f:
        merges = [tuple(line.split(" ")) for line in f.read().split("\n")[1:] if line]
    with open(vocab_path, encoding="utf-8") as f:
        backend = Tokenizer(models.BPE(vocab=json.load(f), merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = transformers.GPT2TokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    tokenizer.save_pretrained(d)
    assert not os.path.exists(os.path.join(d, "vocab.json"))
    return d, model, tokenizer


def hf_logits(model, ids):
    import torch
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


# ---- loading a transformers directory ---------------------------------------------------------
@pytest.mark.parametrize("T", [1, 17, N_POSITIONS])
def test_logits_match_hf(hf_dir, T):
    d, model, _ = hf_dir
    ours, _ = hf.load(d)
    ids = np.random.default_rng(T).integers(0, ours.config.vocab_size, (2, T))
    np.testing.assert_allclose(ours(ids)[0].numpy(), hf_logits(model, ids), atol=1e-4, rtol=0)


def test_tokenizer_json_and_vocab_merges_give_hf_ids(hf_dir, bpe, tmp_path):
    d, _, tokenizer = hf_dir
    _, from_json = hf.load(d)
    published = str(tmp_path / "published")  # the published layout: vocab.json + merges.txt, no tokenizer.json
    shutil.copytree(d, published, ignore=shutil.ignore_patterns("tokenizer*.json"))
    bpe.save_gpt2(published)
    _, from_files = hf.load(published)
    text = "The lazy fox, 12 dogs!<|endoftext|> Quick."
    expected = tokenizer(text).input_ids
    assert from_json.encode(text, allowed_special="all") == expected
    assert from_files.encode(text, allowed_special="all") == expected
    assert from_json.eot_token == from_files.eot_token == bpe.eot_token


def test_greedy_no_repeat_ngram_matches_hf_generate(hf_dir):
    import torch
    d, model, tokenizer = hf_dir
    ours, tok = hf.load(d)
    ids = np.array([tok.encode("The quick brown fox jumps over the lazy dog.")])
    t = torch.from_numpy(ids)
    new = N_POSITIONS - ids.shape[1]
    expected = model.generate(t, attention_mask=torch.ones_like(t), do_sample=False, no_repeat_ngram_size=2,
                              max_new_tokens=new, pad_token_id=tok.eot_token).numpy()
    assert np.array_equal(ours.generate(ids, new, temperature=0, no_repeat_ngram_size=2, eos_token_id=tok.eot_token),
                          expected)


def test_sample_py_reproduces_hf(hf_dir):
    """The tutorial command: greedy, no_repeat_ngram_size=2, printed text equals HF's decoded output."""
    import torch
    d, model, tokenizer = hf_dir
    prompt = "The quick brown fox jumps over the lazy dog."
    t = torch.tensor([tokenizer(prompt).input_ids])
    expected = model.generate(t, attention_mask=torch.ones_like(t), do_sample=False, no_repeat_ngram_size=2,
                              max_new_tokens=20, pad_token_id=tokenizer.eos_token_id)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), f"--init_from={d}", f"--start={prompt}",
                             "--temperature=0", "--no_repeat_ngram_size=2", "--max_new_tokens=20"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == tokenizer.decode(expected[0]) + "\n"


# ---- exporting a model we trained ---------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(bpe):
    """A tiny GPT fitted for a few steps on TEXT with the BPE tokenizer, and a batch of its ids."""
    ng.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=bpe.vocab_size, n_layer=2, n_head=2, n_embd=32))
    ids = np.array(bpe.encode(TEXT)[:4 * 33]).reshape(4, 33)
    opt = model.configure_optimizers(0.0, 1e-2, (0.9, 0.99))
    for _ in range(5):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        model.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), ids[:, :-1]


def test_export_loads_in_transformers(trained, bpe, transformers, tmp_path):
    model, ids = trained
    hf.save(model, bpe, str(tmp_path))
    theirs = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    np.testing.assert_allclose(hf_logits(theirs, ids), model(ids)[0].numpy(), atol=1e-4, rtol=0)
    text = "The lazy dog jumps over 7 quick foxes."
    for cls in (transformers.GPT2TokenizerFast, transformers.AutoTokenizer):
        assert cls.from_pretrained(str(tmp_path))(text).input_ids == bpe.encode(text), cls


def test_export_round_trips(trained, bpe, tmp_path):
    model, _ = trained
    hf.save(model, bpe, str(tmp_path))
    back, tok = hf.load(str(tmp_path))
    assert back.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    assert tok.encode(TEXT) == bpe.encode(TEXT)


def test_untied_output_layer_exports_and_loads_both_ways(bpe, transformers, tmp_path):
    import torch
    ng.manual_seed(3)
    ours = GPT(GPTConfig(block_size=N_POSITIONS, vocab_size=bpe.vocab_size, n_layer=2, n_head=2, n_embd=32,
                         tie_embeddings=False))
    ids = np.array([bpe.encode(TEXT[:60])])
    hf.save(ours, bpe, str(tmp_path))
    theirs = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    assert not torch.equal(theirs.lm_head.weight, theirs.transformer.wte.weight)
    np.testing.assert_allclose(hf_logits(theirs, ids), ours(ids)[0].numpy(), atol=1e-4, rtol=0)
    back, _ = hf.load(str(tmp_path))
    assert not back.config.tie_embeddings
    assert np.array_equal(back.unembed.weight.data, ours.unembed.weight.data)
    theirs.save_pretrained(str(tmp_path / "again"))  # and what transformers writes loads here
    bpe.save_gpt2(str(tmp_path / "again"))
    again, _ = hf.load(str(tmp_path / "again"))
    np.testing.assert_allclose(again(ids)[0].numpy(), ours(ids)[0].numpy(), atol=1e-4, rtol=0)


def test_export_refuses_a_char_tokenizer(trained, tmp_path):
    with pytest.raises(hf.HFError, match="CharTokenizer"):
        hf.save(trained[0], CharTokenizer.train(TEXT), str(tmp_path))


# ---- bad input -------------------------------------------------------------------------------
@pytest.fixture
def exported(trained, bpe, tmp_path):
    d = str(tmp_path / "model")
    hf.save(trained[0], bpe, d)
    return d


def edit_json(path, **changes):
    with open(path) as f:
        d = json.load(f)
    d.update(changes)
    with open(path, "w") as f:
        json.dump(d, f)


def edit_tensors(path, **changes):
    tensors = load_file(path)
    tensors.update(changes)
    save_file(tensors, path, metadata={"format": "pt"})


def rewrite_header(path, n, header=b""):
    """Overwrite the start of a safetensors file: header length n, then `header` bytes."""
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", n) + header)


def claim_huge_tensor(path):
    header = json.dumps({C: {"dtype": "F32", "shape": [2**40, 2**20], "data_offsets": [0, 2**62]}}).encode()
    rewrite_header(path, len(header), header)


C = "transformer.h.0.attn.c_attn.weight"
BAD = {
    "no config": (lambda d: os.remove(f"{d}/config.json"), "config.json"),
    "no weights": (lambda d: os.remove(f"{d}/model.safetensors"), "model.safetensors is missing"),
    "no merges": (lambda d: os.remove(f"{d}/merges.txt"), "merges.txt is missing"),
    "no tokenizer": (lambda d: [os.remove(f"{d}/{f}") for f in ("vocab.json", "merges.txt")], "no tokenizer"),
    "other architecture": (lambda d: edit_json(f"{d}/config.json", model_type="llama"), "model_type 'llama'"),
    "other activation": (lambda d: edit_json(f"{d}/config.json", activation_function="relu"), "activation_function"),
    "config not JSON": (lambda d: open(f"{d}/config.json", "w").write("{"), "config.json: not readable JSON"),
    "vocab too small": (lambda d: edit_json(f"{d}/config.json", vocab_size=10), "vocab_size=10"),
    "wrong shape": (lambda d: edit_tensors(f"{d}/model.safetensors", **{C: np.zeros((32, 95), np.float32)}), C),
    "wrong dtype": (lambda d: edit_tensors(f"{d}/model.safetensors", **{C: np.zeros((32, 96), np.int32)}), C),
    "missing tensor": (lambda d: save_file({k: v for k, v in load_file(f"{d}/model.safetensors").items()
                                            if k != C}, f"{d}/model.safetensors"), C),
    "untied head": (lambda d: edit_tensors(f"{d}/model.safetensors",
                                           **{"lm_head.weight": np.ones((300, 32), np.float32)}), "lm_head.weight"),
    "untied, no head": (lambda d: edit_json(f"{d}/config.json", tie_word_embeddings=False), "lm_head.weight"),
    "truncated": (lambda d: os.truncate(f"{d}/model.safetensors", 1000), "truncated"),
    "absurd header": (lambda d: rewrite_header(f"{d}/model.safetensors", 2**62), "over the"),
    "absurd tensor": (lambda d: claim_huge_tensor(f"{d}/model.safetensors"), C),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_directory_is_a_one_line_error(exported, case):
    corrupt, message = BAD[case]
    corrupt(exported)
    with pytest.raises(ValueError) as e:
        hf.load(exported)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert exported in str(e.value)  # names the directory or the file in it


def test_sample_py_bad_directory_is_one_line_on_stderr(exported):
    edit_json(f"{exported}/config.json", model_type="bert")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), f"--init_from={exported}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "model_type 'bert'" in result.stderr
