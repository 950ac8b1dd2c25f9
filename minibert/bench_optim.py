"""bench-optim: AdamW step time on the MiniLM-sized parameter set, ours next to torch.optim.

    python -m minibert bench-optim [--device cpu|cuda] [--steps N] [--amsgrad] [--json PATH]

The parameter set has the shapes of all-MiniLM-L6-v2 (taken from its config.json: 22.7M
parameters in 103 tensors), with random gradients. Every optimizer gets its own copy of
the parameters and the same gradients; the timed steps are interleaved round-robin (one
step of each optimizer in turn), so a load change on a shared machine hits all of them
alike. The table reports the median (and the fastest) step time.
"""

import argparse
import json
import statistics
import time

import torch
from tqdm import tqdm

from minibert.optim import AdamW
from minibert.paths import weights_dir
from minibert.runtime import device_name

# all-MiniLM-L6-v2, in case the weights (and their config.json) are not fetched yet
MINILM_CONFIG = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, intermediate_size=1536,
                     max_position_embeddings=512, type_vocab_size=2)


def bert_parameter_shapes(config: dict) -> dict:
    """name -> shape of every parameter of a BERT encoder (with pooler) of this config."""
    V, H, L, F = (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
                  config["intermediate_size"])
    shapes = {
        "embeddings.word": (V, H),
        "embeddings.position": (config["max_position_embeddings"], H),
        "embeddings.token_type": (config["type_vocab_size"], H),
        "embeddings.ln.weight": (H,), "embeddings.ln.bias": (H,),
    }
    for i in range(L):
        for name, out_dim, in_dim in [("q", H, H), ("k", H, H), ("v", H, H), ("o", H, H),
                                      ("ffn_in", F, H), ("ffn_out", H, F)]:
            shapes[f"layer{i}.{name}.weight"] = (out_dim, in_dim)
            shapes[f"layer{i}.{name}.bias"] = (out_dim,)
        for ln in ("ln_attn", "ln_ffn"):
            shapes[f"layer{i}.{ln}.weight"] = (H,)
            shapes[f"layer{i}.{ln}.bias"] = (H,)
    shapes["pooler.weight"], shapes["pooler.bias"] = (H, H), (H,)
    return shapes


def candidates(device: torch.device, hp: dict) -> dict:
    """name -> a function building that optimizer over a list of parameters."""
    made = {
        "minibert AdamW, readable (foreach=False)": lambda ps: AdamW(ps, **hp, foreach=False),
        "minibert AdamW, fused (foreach=True)": lambda ps: AdamW(ps, **hp, foreach=True),
        "torch.optim.AdamW, single-tensor (foreach=False)": lambda ps: torch.optim.AdamW(ps, **hp, foreach=False),
        "torch.optim.AdamW, foreach=True": lambda ps: torch.optim.AdamW(ps, **hp, foreach=True),
        "torch.optim.AdamW, fused=True": lambda ps: torch.optim.AdamW(ps, **hp, fused=True),
    }
    if device.type == "cuda":
        made["torch.optim.AdamW, foreach + capturable"] = lambda ps: torch.optim.AdamW(
            ps, **hp, foreach=True, capturable=True)
    return made


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device: torch.device, steps: int, warmup: int, amsgrad: bool, config: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    shapes = list(bert_parameter_shapes(config).values())
    init = [(torch.randn(s, generator=gen) * 0.02).to(device) for s in shapes]
    grads = [(torch.randn(s, generator=gen) * 1e-3).to(device) for s in shapes]  # shared, read-only
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=amsgrad)

    optimizers, skipped = {}, {}
    for name, make in candidates(device, hp).items():
        params = [t.clone().requires_grad_() for t in init]
        for p, g in zip(params, grads):
            p.grad = g
        try:
            optimizer = make(params)
            optimizer.step()  # also checks that this variant runs here at all
        except (RuntimeError, ValueError) as e:  # e.g. torch's fused=True on an old CPU build
            skipped[name] = str(e).splitlines()[0]
            continue
        optimizers[name] = optimizer

    times = {name: [] for name in optimizers}
    for i in tqdm(range(warmup + steps), desc=f"optimizer steps ({device.type})", unit="round"):
        for name, optimizer in optimizers.items():  # round-robin, see the module docstring
            sync(device)
            start = time.perf_counter()
            optimizer.step()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)

    return {**summary(device, init, steps, warmup, times, "optimizer"), "amsgrad": amsgrad, "skipped": skipped}


def summary(device: torch.device, tensors: list, steps: int, warmup: int, times: dict, key: str) -> dict:
    """What a benchmark on MiniLM's shapes reports: the setting, and per timed variant (`key`:
    its name) the median and the fastest of its step times in `times` (seconds)."""
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "parameters": sum(t.numel() for t in tensors),
        "tensors": len(tensors),
        "steps": steps,
        "warmup": warmup,
        "rows": [{key: name, "median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t)}
                 for name, t in times.items()],
    }


def markdown_table(result: dict) -> str:
    baseline = next((r for r in result["rows"] if r["optimizer"] == "torch.optim.AdamW, foreach=True"), None)
    lines = [f"AdamW step, {result['parameters'] / 1e6:.1f}M parameters in {result['tensors']} tensors, "
             f"amsgrad={result['amsgrad']}, {result['device']}, torch {result['torch']}, "
             f"{result['steps']} timed steps each, interleaved",
             "",
             "| optimizer | median ms/step | min ms/step | median vs torch foreach | min vs torch foreach |",
             "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ratios = [f"{r[k] / baseline[k]:.2f}x" if baseline else "-" for k in ("median_ms", "min_ms")]
        lines.append(f"| {r['optimizer']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {' | '.join(ratios)} |")
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | unavailable: {why} | | | |")
    return "\n".join(lines)


def parser(prog: str, doc: str, steps: int, warmup: int, what: str) -> argparse.ArgumentParser:
    """The options of a benchmark on MiniLM's parameter shapes (bench-optim, bench-pcgrad)."""
    # The docstring's first paragraph, which may span several lines: its first line alone can
    # end mid-sentence.
    summary = " ".join(doc.split("\n\n")[0].split())
    p = argparse.ArgumentParser(prog=prog, description=summary, allow_abbrev=False)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=steps, help=f"timed steps per {what} (median reported)")
    p.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps per {what} first")
    p.add_argument("--weights", default=None, help="BERT folder whose config.json gives the shapes "
                                                   "(default: all-MiniLM-L6-v2)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    return p


def shapes_config(p: argparse.ArgumentParser, args) -> dict:
    """Check the shared options; returns the BERT config whose shapes are benchmarked."""
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch sees no CUDA device")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    config_path = weights_dir(args.weights) / "config.json"
    return json.loads(config_path.read_text()) if config_path.exists() else MINILM_CONFIG


def report(result: dict, table: str, json_path) -> int:
    print(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def main(argv) -> int:
    p = parser("python -m minibert bench-optim", __doc__, steps=20, warmup=3, what="optimizer")
    p.add_argument("--amsgrad", action="store_true", help="time the AMSGrad variant")
    args = p.parse_args(argv)
    config = shapes_config(p, args)
    result = bench(torch.device(args.device), args.steps, args.warmup, args.amsgrad, config)
    return report(result, markdown_table(result), args.json)
