"""Writes a tiny llama-architecture GGUF with random weights for the e2e tests.

Usage: python3 tests/llama/tiny_model.py <vocab-only.gguf> <out.gguf>

The tokenizer (every `tokenizer.*` key) is copied from a vocab-only GGUF shipped with
llama.cpp (`models/ggml-vocab-llama-spm.gguf`); the network is 2 layers of width 64, so
`llama-server` loads it in well under a second and answers at CPU speed. Its output is
gibberish: callers always set `max_tokens`.
"""

import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

LAYERS = 2
EMBED = 64
HEADS = 4
KV_HEADS = 2
FFN = 128
CONTEXT = 4096


def copy_tokenizer(reader: GGUFReader, writer: GGUFWriter) -> int:
    """Copies the `tokenizer.*` keys; returns the vocabulary size."""
    vocab = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            values = field.contents()
            writer.add_array(name, values)
            if name == "tokenizer.ggml.tokens":
                vocab = len(values)
        else:
            writer.add_key_value(name, field.contents(), vtype)
    if vocab == 0:
        sys.exit("the vocabulary file has no tokenizer.ggml.tokens")
    return vocab


def main() -> None:
    vocab_path, out_path = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(7)
    writer = GGUFWriter(out_path, "llama")
    vocab = copy_tokenizer(GGUFReader(vocab_path), writer)
    writer.add_name("switchyard-e2e-tiny")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(0)  # all F32

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = lambda n: np.ones(n, dtype=np.float32)  # noqa: E731
    kv = EMBED // HEADS * KV_HEADS
    # numpy shapes are (rows, cols); GGUF stores them reversed, as llama.cpp expects.
    writer.add_tensor("token_embd.weight", weight(vocab, EMBED))
    writer.add_tensor("output_norm.weight", ones(EMBED))
    writer.add_tensor("output.weight", weight(vocab, EMBED))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones(EMBED))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv, EMBED))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv, EMBED))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones(EMBED))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(FFN, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(FFN, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(EMBED, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
