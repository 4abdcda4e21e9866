"""Weight facts of a checkpoint directory for bench_quant.sh: bytes on disk, and the bytes one decode step reads.

    python3 bench/quant_facts.py DIR     prints the bytes read per decoded token

Every weight tensor the forward pass reads counts, i.e. all of them except the embedding table, of which one row
per token is read -- unless the embeddings are tied, when the head reads the whole table.
"""
import json
import os
import struct
import sys


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def weight_facts(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    st = os.path.join(d, "model.safetensors")
    hdr = st_header(st)
    size = lambda v: v["data_offsets"][1] - v["data_offsets"][0]
    tied = bool(cfg.get("tie_word_embeddings", False)) or "lm_head.weight" not in hdr
    data = sum(size(v) for k, v in hdr.items() if "rotary_emb.inv_freq" not in k)
    emb = sum(size(v) for k, v in hdr.items() if k.startswith("model.embed_tokens."))
    per_token = data if tied else data - emb
    return {"disk_bytes": os.path.getsize(st), "data_bytes": data, "embedding_bytes": emb, "tied": tied,
            "bytes_per_token": per_token}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(weight_facts(sys.argv[1])["bytes_per_token"])
