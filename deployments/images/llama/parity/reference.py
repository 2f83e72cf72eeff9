#!/usr/bin/env python3
"""transformers' reference answers for ggufgen's TinyLlama (issue 15).

Loads the GGUF that ggufgen wrote with transformers' own GGUF reader (the
weights de-permuted and the tokenizer rebuilt by transformers, not by us),
then writes, for each prompt, the prompt's token ids, the greedy
continuation's ids, text and per-token log-probabilities (model.generate,
do_sample=False) and the smallest top-1 logit margin along it; and for a few
texts the mean-pooled, L2-normalised final hidden state (what llama.cpp's
mean pooling answers on /v1/embeddings). Runs in the py-sid root (run.sh);
the Go image test compares the generation runtime's answers with this file.

usage: reference.py MODEL.gguf SEED OUT.json
       reference.py --margins A.gguf B.gguf ...   (the smallest margin of each: a seed search)
"""
import hashlib
import importlib.metadata
import json
import os
import sys

import gguf

# Debian's python3-gguf ships gguf-*.dist-info without the top-level
# mapping transformers looks the version up by, and the module has no
# __version__: transformers' fallback reads that attribute.
if not hasattr(gguf, "__version__"):
    gguf.__version__ = importlib.metadata.version("gguf")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

MAX_TOKENS = 16

COMPLETIONS = [
    ("hello", "hello world"),
    ("cat", "The cat sat on the mat"),
    ("story", "Once upon a time there was a dog"),
    ("question", "What is the number of people in the world?"),
    ("unknown-words", "zebra and café, 42"),
    ("newline", "Hello\nthe"),
]

CHATS = [
    ("chat-user", [{"role": "user", "content": "hello"}]),
    ("chat-system", [{"role": "system", "content": "You are a good model."},
                     {"role": "user", "content": "Tell me a story."}]),
    ("chat-turns", [{"role": "user", "content": "hello"},
                    {"role": "assistant", "content": "hello world"},
                    {"role": "user", "content": "What is the time?"}]),
]

EMBED_TEXTS = ["hello world", "The cat sat on the mat", "zebra"]


def load(path):
    folder, name = os.path.split(os.path.abspath(path))
    # transformers 5.12's GGUF tokenizer leaves tokenizer.ggml.add_bos_token
    # unread (it adds no <s>); llama.cpp honours it: pass the header's value
    header = gguf.GGUFReader(path).fields
    key = "tokenizer.ggml.add_bos_token"
    add_bos = bool(header[key].parts[-1][0]) if key in header else True
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, add_bos_token=add_bos)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    return tok, model, add_bos


def greedy(tok, model, ids):
    """generate's greedy continuation of ids: its ids, text, the chosen
    tokens' log-probabilities and the smallest top-1 margin along it."""
    inp = torch.tensor([ids])
    with torch.no_grad():
        g = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=MAX_TOKENS,
                           do_sample=False, output_scores=True, return_dict_in_generate=True,
                           pad_token_id=0, eos_token_id=None)
    new = g.sequences[0, len(ids):].tolist()
    margins = []
    for s in g.scores:
        top = torch.topk(s[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    # the text llama-server answers: the continuation's pieces as they
    # follow the prompt (SentencePiece's decoder drops a leading space only
    # at the start of the whole text)
    whole, head = tok.decode(ids + new), tok.decode(ids)
    if not whole.startswith(head):
        raise SystemExit(f"decode(prompt+answer) does not start with decode(prompt): {whole!r} / {head!r}")
    # the whole sequence again without the KV cache: the same choices, and
    # their margins and log-probabilities
    with torch.no_grad():
        logits = model(torch.tensor([ids + new])).logits[0].double()
    logprobs = []
    for i, t in enumerate(new):
        row = logits[len(ids) - 1 + i]
        top = torch.topk(row, 2)
        if int(top.indices[0]) != t:
            raise SystemExit(f"the forward pass without cache disagrees with generate at step {i}")
        margins.append(float(top.values[0] - top.values[1]))
        logprobs.append(round(float(torch.log_softmax(row, -1)[t]), 5))
    return new, whole[len(head):], logprobs, min(margins)


def cases(tok, model):
    out = []
    for name, prompt in COMPLETIONS:
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        new, text, lps, m = greedy(tok, model, ids)
        out.append({"name": name, "prompt": prompt, "prompt_ids": ids, "max_tokens": MAX_TOKENS,
                    "ids": new, "text": text, "logprobs": lps, "min_margin": round(m, 4)})
    for name, messages in CHATS:
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(rendered, add_special_tokens=True)["input_ids"]
        new, text, lps, m = greedy(tok, model, ids)
        out.append({"name": name, "messages": messages, "rendered": rendered, "prompt_ids": ids,
                    "max_tokens": MAX_TOKENS, "ids": new, "text": text, "logprobs": lps,
                    "min_margin": round(m, 4)})
    return out


def embeddings(tok, model):
    out = []
    for text in EMBED_TEXTS:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            h = model.model(torch.tensor([ids])).last_hidden_state[0]  # after the final RMSNorm
        v = torch.nn.functional.normalize(h.double().mean(dim=0), dim=0)
        out.append({"text": text, "ids": ids, "pooling": "mean", "normalize": "l2",
                    "vector": [round(float(x), 6) for x in v]})
    return out


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if sys.argv[1] == "--margins":
        for path in sys.argv[2:]:
            tok, model, _ = load(path)
            print(f"{path} {min(c['min_margin'] for c in cases(tok, model)):.4f}", flush=True)
        return
    path, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tok, model, add_bos = load(path)
    cs = cases(tok, model)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    doc = {
        "comment": "transformers' greedy generate and mean pooling on ggufgen.TinyLlama(seed); "
                   "written by deployments/images/llama/parity/run.sh (make parity-fixture), do not edit",
        "seed": seed,
        "gguf_sha256": digest,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "gguf": gguf.__version__, "tokenizers": tokenizers.__version__},
        "add_bos_token": add_bos,
        "min_margin": min(c["min_margin"] for c in cs),
        "cases": cs,
        "embeddings": embeddings(tok, model),
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for c in cs:
        print(f"{c['name']:14s} margin {c['min_margin']:8.4f}  {len(c['prompt_ids']):2d} prompt ids -> {c['text']!r}")
    print(f"smallest top-1 logit margin over all greedy steps: {doc['min_margin']:.4f}")


if __name__ == "__main__":
    main()
