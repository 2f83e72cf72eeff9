#!/usr/bin/python3
"""Writes a MiniLM-sized BERT encoder with random weights as a Hugging Face
ONNX folder (model.onnx, config.json, tokenizer.json) for the engine
benchmarks: 6 layers, hidden 384, 12 heads, intermediate 1536, vocabulary
30522, 128 positions (texts truncate to 128 tokens), output last_hidden_state
(feature-extraction). The graph uses the ops and opset (14) of transformers'
own export, as the fixtures do; weights come from a seeded generator, so the
folder is the same on every run. Needs python3-onnx and python3-numpy
(Debian packages).

usage: minilm.py OUT_DIR TOKENIZER_DIR   (TOKENIZER_DIR: a fixture whose
tokenizer.json is reused; its ids are all below the vocabulary size)
"""
import json
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LAYERS, HIDDEN, HEADS, FFN, VOCAB, POSITIONS = 6, 384, 12, 1536, 30522, 128
HEAD = HIDDEN // HEADS


def main(out, tokdir):
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def w(name, *shape, scale=0.02):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(name, value, dtype=np.int64):
        inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def ones(name, n):
        inits.append(numpy_helper.from_array(np.ones(n, np.float32), name))
        return name

    def zeros(name, n):
        inits.append(numpy_helper.from_array(np.zeros(n, np.float32), name))
        return name

    def op(kind, inputs, name, **attrs):
        nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def layer_norm(x, p):
        mean = op("ReduceMean", [x], p + "/mean", axes=[-1])
        d = op("Sub", [x, mean], p + "/d")
        var = op("ReduceMean", [op("Pow", [d, const(p + "/two", 2.0, np.float32)], p + "/sq")], p + "/var", axes=[-1])
        std = op("Sqrt", [op("Add", [var, const(p + "/eps", 1e-12, np.float32)], p + "/veps")], p + "/std")
        y = op("Div", [d, std], p + "/norm")
        return op("Add", [op("Mul", [y, ones(p + ".weight", HIDDEN)], p + "/scaled"), zeros(p + ".bias", HIDDEN)], p + "/out")

    def dense(x, p, n_in, n_out):
        return op("Add", [op("MatMul", [x, w(p + ".weight", n_in, n_out)], p + "/mm"), zeros(p + ".bias", n_out)], p + "/out")

    # shapes taken from the input, as the exporter does
    shape = op("Shape", ["input_ids"], "shape")
    batch = op("Unsqueeze", [op("Gather", [shape, const("i0", 0)], "batch0", axis=0), const("ax0", [0])], "batch")
    seq = op("Unsqueeze", [op("Gather", [shape, const("i1", 1)], "seq0", axis=0), const("ax0b", [0])], "seq")
    heads_shape = op("Concat", [batch, seq, const("heads", [HEADS]), const("head", [HEAD])], "heads_shape", axis=0)
    hidden_shape = op("Concat", [batch, seq, const("hid", [HIDDEN])], "hidden_shape", axis=0)
    positions = op("Slice", [const("arange", np.arange(POSITIONS)), const("zero", [0]), seq, const("axis0", [0]), const("step", [1])], "positions")

    x = op("Add", [op("Gather", [w("word_embeddings", VOCAB, HIDDEN), "input_ids"], "words"),
                   op("Gather", [w("token_type_embeddings", 2, HIDDEN), "token_type_ids"], "types")], "emb0")
    x = op("Add", [x, op("Gather", [w("position_embeddings", POSITIONS, HIDDEN), positions], "pos")], "emb1")
    x = layer_norm(x, "embeddings.LayerNorm")

    m = op("Cast", [op("Unsqueeze", [op("Unsqueeze", ["attention_mask", const("ax1", [1])], "m1"), const("ax2", [2])], "m2")], "mf", to=TensorProto.FLOAT)
    mask = op("Mul", [op("Sub", [const("one", 1.0, np.float32), m], "inv"), const("neg", -3.4028234663852886e38, np.float32)], "mask")

    for i in range(LAYERS):
        p = f"layer.{i}"

        def split(t, name, perm):
            return op("Transpose", [op("Reshape", [t, heads_shape], name + "/r")], name, perm=perm)

        q = split(dense(x, p + ".query", HIDDEN, HIDDEN), p + "/q", [0, 2, 1, 3])
        k = split(dense(x, p + ".key", HIDDEN, HIDDEN), p + "/k", [0, 2, 3, 1])
        v = split(dense(x, p + ".value", HIDDEN, HIDDEN), p + "/v", [0, 2, 1, 3])
        s = op("Div", [op("MatMul", [q, k], p + "/qk"), const(p + "/scale", float(np.sqrt(HEAD)), np.float32)], p + "/s")
        probs = op("Softmax", [op("Add", [s, mask], p + "/sm")], p + "/probs", axis=-1)
        ctx = op("Reshape", [op("Transpose", [op("MatMul", [probs, v], p + "/pv")], p + "/ctx_t", perm=[0, 2, 1, 3]), hidden_shape], p + "/ctx")
        x = layer_norm(op("Add", [dense(ctx, p + ".attention.output", HIDDEN, HIDDEN), x], p + "/res1"), p + ".attention.LayerNorm")
        h = dense(x, p + ".intermediate", HIDDEN, FFN)
        erf = op("Erf", [op("Div", [h, const(p + "/sqrt2", float(np.sqrt(2.0)), np.float32)], p + "/hs")], p + "/erf")
        gelu = op("Mul", [op("Mul", [h, op("Add", [erf, const(p + "/one", 1.0, np.float32)], p + "/erf1")], p + "/he"), const(p + "/half", 0.5, np.float32)], p + "/gelu")
        x = layer_norm(op("Add", [dense(gelu, p + ".output", FFN, HIDDEN), x], p + "/res2"), p + ".output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="out"))

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    out_info = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])
    graph = helper.make_graph(nodes, "minilm_random", ids, [out_info], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="nlpswarm-minilm-gen")
    model.ir_version = 8
    onnx.checker.check_model(model)

    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "model.onnx.tmp")
    onnx.save(model, tmp)
    os.replace(tmp, os.path.join(out, "model.onnx"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tokdir, f)):
            shutil.copyfile(os.path.join(tokdir, f), os.path.join(out, f))
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
           "num_attention_heads": HEADS, "intermediate_size": FFN, "vocab_size": VOCAB, "max_position_embeddings": POSITIONS,
           "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
