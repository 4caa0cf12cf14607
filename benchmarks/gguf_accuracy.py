"""Accuracy on a GGUF file: our logits and llama.cpp's against the float32 function the file's weights define.

The reference dequantizes every tensor with the ``gguf`` package (``gguf.quants.dequantize``, llama.cpp's own
Python code) into a plain float32 Qwen3 (qwen3_api/model/gguf/reference.py). Both engines quantize activations
to int8 per block for the quantized matmuls; the issue's bar is that our error against the reference is no larger
than llama.cpp's on the same file and tokens. Teacher-forced, all logits of a window in one pass.

    python benchmarks/gguf_accuracy.py FILE.gguf [FILE.gguf ...] [--ctx 128] [--chunks 4] [--llama-bin DIR]

llama.cpp's side is ``llama-perplexity --kl-divergence-base`` (its full log-probabilities over the second half of
each window, written to a file this script reads), on llama.cpp's own tokenization of a fixed text; ours and the
reference run the same token windows. Printed per file: mean, median and max |delta| of the target tokens'
log-probabilities (the median is the one a few near-tied routers flipping in one engine and not the other do not
move), mean KL(reference || engine) over the vocabulary, top-1 agreement, for us and for llama.cpp,
and the ratio of the mean errors.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contiguous_kv import make_contiguous_metadata  # noqa: E402

from qwen3_api.engine.kv_cache import allocate_kv_cache  # noqa: E402
from qwen3_api.model.gguf.reference import reference_model  # noqa: E402
from qwen3_api.model.loader import load_model  # noqa: E402


def our_logits(net: torch.nn.Module, seq: list[int]) -> torch.Tensor:
    """[len, vocab] float32 logits of one sequence, one prefill pass."""
    block = 16
    attn = make_contiguous_metadata([len(seq)], "cpu", block)
    caches = allocate_kv_cache(net.config, -(-len(seq) // block), block, "cpu", torch.float32)
    with torch.inference_mode():
        hidden = net(torch.tensor(seq), torch.arange(len(seq)), attn, caches)
        return net.compute_logits(hidden).float()


def llama_logprobs(tool: Path, path: Path, n_ctx: int, chunks: int, threads: int, work: Path
                   ) -> tuple[list[list[int]], list[torch.Tensor]]:
    """llama.cpp's log-probabilities over the vocabulary, from ``llama-perplexity --kl-divergence-base``: the
    chunks' tokens (llama.cpp's tokenization of a fixed text) and, per chunk, [n_ctx - 1 - n_ctx // 2, vocab] rows
    for positions n_ctx // 2 .. n_ctx - 2 (the second half of each window, as llama-perplexity scores it).
    The file stores each row as uint16 steps of (max - min) / 65535 over at most 16 nats below the maximum."""
    text = work / "text.txt"
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly pack boxes of "
             "liquor jugs and numbers 12 345 6789 follow").split()
    gen = torch.Generator().manual_seed(0)
    text.write_text(" ".join(words[i] for i in torch.randint(0, len(words), (n_ctx * chunks * 2,), generator=gen)))
    out = work / f"{path.stem}.kld"
    proc = subprocess.run([str(tool), "-m", str(path), "-f", str(text), "-c", str(n_ctx), "-b", str(n_ctx),
                           "--chunks", str(chunks), "-t", str(threads), "--kl-divergence-base", str(out)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"llama-perplexity failed: {proc.stderr[-2000:]}")
    raw = out.read_bytes()
    assert raw[:8] == b"_logits_", "not a llama-perplexity logits file"
    n_ctx_file, n_vocab, n_chunk = np.frombuffer(raw, np.int32, 3, 8)
    tokens = np.frombuffer(raw, np.int32, n_chunk * n_ctx_file, 20).reshape(n_chunk, n_ctx_file)
    first = n_ctx_file // 2
    nv = 2 * ((n_vocab + 1) // 2) + 4
    rows = n_ctx_file - 1 - first
    body = np.frombuffer(raw, np.uint16, n_chunk * rows * nv, 20 + tokens.nbytes).reshape(n_chunk, rows, nv)
    logprobs = []
    for c in range(n_chunk):
        head = body[c, :, :4].copy().view(np.float32)  # (scale, min_log_prob) per row
        q = body[c, :, 4:4 + n_vocab].astype(np.float32)
        lp = head[:, 1:2] + head[:, 0:1] * q
        lp[q == 0] = -np.inf  # below the stored range (more than 16 nats under the maximum)
        logprobs.append(torch.from_numpy(lp))
    return [t.tolist() for t in tokens], logprobs


def errors(ours: list[torch.Tensor], ref: list[torch.Tensor], targets: list[list[int]]) -> dict[str, float]:
    """|delta| of the targets' log-probabilities, KL(ref || ours) over the tokens both hold, top-1 agreement;
    each list holds [positions, vocab] log-probabilities, ``targets`` the next token at each position."""
    deltas, kls, agree = [], [], []
    for lp, rp, tgt in zip(ours, ref, targets, strict=True):
        t = torch.tensor(tgt)[:, None]
        deltas.append((lp.gather(-1, t) - rp.gather(-1, t)).abs()[:, 0])
        finite = torch.isfinite(lp)
        kls.append(torch.where(finite, rp.exp() * (rp - lp), torch.zeros(())).sum(-1))
        agree.append((lp.argmax(-1) == rp.argmax(-1)).float())
    d = torch.cat(deltas)
    return {"mean": d.mean().item(), "median": d.median().item(), "max": d.max().item(),
            "kl": torch.cat(kls).mean().item(),
            "top1": torch.cat(agree).mean().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--ctx", type=int, default=128, help="window; positions ctx/2 .. ctx-2 are scored")
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--llama-bin", type=Path, default=Path(os.environ.get("LLAMA_CPP_BIN", "/work/llamacpp/build/bin")))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tool = args.llama_bin / "llama-perplexity"
    if not tool.exists():
        sys.exit(f"{tool} not found: build llama.cpp (benchmarks/RESULTS.md) or pass --llama-bin DIR")
    print(f"{'file':30} {'engine':9} {'mean|dlogp|':>11} {'median':>8} {'max|dlogp|':>10} {'KL':>9} {'top1':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.files:
            seqs, theirs = llama_logprobs(tool, path, args.ctx, args.chunks, args.threads, Path(tmp))
            first = args.ctx // 2
            ours_net, _ = load_model(path)
            ref_net, _ = reference_model(path)

            ref = [torch.log_softmax(our_logits(ref_net, s)[first:-1], -1) for s in seqs]
            ours = [torch.log_softmax(our_logits(ours_net, s)[first:-1], -1) for s in seqs]
            targets = [s[first + 1:] for s in seqs]
            # llama-perplexity stores 16 nats below each row's maximum: a target under that has no value there,
            # so those positions (a few %) are left out for all three
            keep = [torch.isfinite(t.gather(-1, torch.tensor(g)[:, None]))[:, 0] for t, g in zip(theirs, targets,
                                                                                               strict=True)]
            dropped = sum(int((~k).sum()) for k in keep)
            ref, ours, theirs = ([x[k] for x, k in zip(xs, keep, strict=True)] for xs in (ref, ours, theirs))
            targets = [[g for g, flag in zip(t, k.tolist(), strict=True) if flag] for t, k in zip(targets, keep,
                                                                                                strict=True)]
            rows = {"ours": errors(ours, ref, targets), "llama.cpp": errors(theirs, ref, targets)}
            for engine, e in rows.items():
                print(f"{path.name[:30]:30} {engine:9} {e['mean']:11.5f} {e['median']:8.5f} {e['max']:10.4f} {e['kl']:9.2e} "
                      f"{e['top1']:6.3f}")
            print(f"{'':30} {'ratio':9} {rows['ours']['mean'] / max(rows['llama.cpp']['mean'], 1e-12):11.3f} "
                  f"{rows['ours']['median'] / max(rows['llama.cpp']['median'], 1e-12):8.3f}  (ours / llama.cpp; "
                  f"{dropped} of {dropped + sum(len(t) for t in targets)} positions out of llama.cpp's stored range)")


if __name__ == "__main__":
    main()
