"""`python -m minibert bench`: training-step throughput and MFU, ours next to transformers.

One training step = forward + backward + optimizer step, under bf16 autocast on CUDA, on
random full-length batches (batch 64 x length 128, no padding mask, for every model alike),
for the MiniLM-L6 config and the bert-base config. Variants:

    minibert reference        model.py's readable path (SDPA attention), eager
    minibert fast             set_fast(True): minibert/ops.py's fused ops, eager
    minibert compiled         fast + torch.compile (each BertLayer, fullgraph=True)
    minibert compiled+graph   the compiled step captured as one CUDA graph (cudagraph.py)
    transformers eager        transformers' BertModel, SDPA attention (when installed)
    transformers compiled     the same under torch.compile(model)

MFU (model FLOPs utilisation, as PaLM defines it) = the model's FLOPs per second / the
chip's dense bf16 peak from its datasheet (DATASHEET_BF16_TFLOPS; "n/a" for a chip not in the
table). A second column divides by the bf16 matrix-multiply rate MEASURED in the same run (one
large bf16 matrix product), which no real chip reaches its datasheet peak on: it says how
close a step comes to what this card does in practice, and reads higher than MFU. FLOPs are
counted the usual way: a multiply-add is 2 FLOPs, the backward costs twice the forward, so a
step costs 3 x the forward's 2 x (matrix parameters) per token + the attention products
4 x T x C per token per layer.

Then tokens/s on the real data mix (SST, Quora and STS training sentences, tokenized,
length-bucketed into batches of 64 by minibert/batching.py), and the fraction of the
positions the encoder processes that are real tokens, not padding.

On a machine without CUDA it runs a tiny config for a few steps (CI runs it untimed; the
compiled variants use torch.compile's aot_eager backend there, which checks that the
model traces but generates no kernels, and there are no CUDA graphs).

transformers is imported only here, lazily, and only for the comparison rows.
"""

import argparse
import datetime
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from minibert.batching import bucketed_batches, pad_batch, real_token_fraction
from minibert.config import BertConfig
from minibert.cudagraph import capture_step
from minibert.model import BertModel
from minibert.runtime import autocast, pick_device

CONFIGS = {
    "minilm-l6": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
}


# ---- what a step costs, what the chip can do ----------------------------------------------------


def train_flops_per_token(config: BertConfig, T: int) -> float:
    """FLOPs of one training step per token (forward + backward = 3 x forward)."""
    C, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    matmul = 2 * L * (4 * C * C + 2 * C * I)  # Q, K, V, attention output; feed-forward in and out
    attention = 2 * L * 2 * T * C             # Q K^T and weights @ V: T x C multiply-adds each
    return 3 * (matmul + attention)


# dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets; matched in
# order against torch.cuda.get_device_name (first match wins)
DATASHEET_BF16_TFLOPS = (
    ("H100 PCIe", 756.5),      # H100 PCIe datasheet: 1,513 with sparsity
    ("H100", 989.4),           # H100 SXM5 ("NVIDIA H100 80GB HBM3"): 1,979 with sparsity
    ("H200", 989.4),           # H200 SXM: the H100 SXM's tensor cores, more memory
    ("A100", 312.0),           # A100 SXM4 and PCIe: 624 with sparsity
)


def datasheet_peak_tflops(device_name: str):
    """The chip's dense bf16 peak (TFLOP/s) from DATASHEET_BF16_TFLOPS, or None."""
    if "NVL" in device_name:  # the NVL boards run lower clocks: not in the table
        return None
    return next((tflops for key, tflops in DATASHEET_BF16_TFLOPS if key in device_name), None)


def matmul_peak_tflops(device, n: int = 8192, repeats: int = 20):
    """Measured bf16 matrix-multiply rate (TFLOP/s, median of `repeats`); None off CUDA."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.mm(a, b, out=out)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n ** 3 / statistics.median(times) / 1e12


# ---- models, optimizer, one step ---------------------------------------------------------------


def make_optimizer(params, device, which="minibert"):
    """Returns (optimizer, label): minibert.optim.AdamW(foreach=True), whose step keeps its
    counters on the device and syncs nothing, so a CUDA graph can capture it; or, with
    which="torch", torch.optim.AdamW (fused=True, capturable=True on CUDA; foreach on CPU)."""
    if which == "torch":
        if device.type == "cuda":
            return (torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=True, capturable=True),
                    "torch.optim.AdamW(fused=True, capturable=True)")
        return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, foreach=True), "torch.optim.AdamW(foreach=True)"
    from minibert.optim import AdamW
    lr = torch.tensor(1e-5, device=device)  # a tensor lr: a schedule can change it between graph replays
    return AdamW(params, lr=lr, weight_decay=0.01, foreach=True), "minibert.optim.AdamW(foreach=True)"


def make_step(forward, optimizer, batch, device):
    """One training step on the static `batch` tensors; the loss is a stand-in for a task head
    (mean square of the outputs), identical for every model."""
    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            out = forward(**batch)
            loss = out["last_hidden_state"].float().pow(2).mean() + out["pooler_output"].float().pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def compile_fn(module, device, fullgraph=True, dynamic=None):
    """torch.compile: Inductor kernels on CUDA; on CPU the aot_eager backend (traces forward
    and backward, generates nothing), so CI checks the traced path in seconds."""
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    return torch.compile(module, fullgraph=fullgraph, dynamic=dynamic, backend=backend)


def compile_ours(model, device, scope: str, dynamic=None):
    """Compile the fast model: each BertLayer ("layer": one compilation shared by all layers,
    so it compiles in seconds) or the whole model ("model")."""
    if scope == "model":
        return compile_fn(model, device, dynamic=dynamic)
    for i, layer in enumerate(model.encoder.layer):
        model.encoder.layer[i] = compile_fn(layer, device, dynamic=dynamic)
    return model


def hf_model(config: BertConfig):
    """transformers' BertModel with SDPA attention and the same config, or None."""
    try:
        import transformers
    except ImportError:
        return None
    hf_config = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "architectures"},
                                        attn_implementation="sdpa")
    return transformers.BertModel(hf_config)


def random_batches(config, B, T, device, n=4, seed=0):
    """n different random full-length batches (never zeros: real ids, real work)."""
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1000, config.vocab_size, (B, T), generator=g).to(device),
             "token_type_ids": torch.randint(0, 2, (B, T), generator=g).to(device)} for _ in range(n)]


def time_steps(step, batches, static, device, steps, repeats):
    """Median seconds per step over `repeats` runs of `steps` steps; each step first copies the
    next batch into the static input tensors (what a CUDA-graph step must do anyway)."""
    def run(n):
        for i in range(n):
            for k, v in batches[i % len(batches)].items():
                static[k].copy_(v)
            step()

    run(2)  # warm: everything compiled and allocated before the clock starts
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run(steps)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / steps)
        else:
            t0 = time.perf_counter()
            run(steps)
            times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times), min(times), max(times)


# ---- the fixed-shape benchmark -----------------------------------------------------------------


def bench_config(name, config, args, device, peaks, log):
    """All variants for one config; one failing variant gives an error row, not a crash."""
    B, T = args.batch, args.length
    flops_step = train_flops_per_token(config, T) * B * T
    batches = random_batches(config, B, T, device)
    rows = []

    def record(variant, fn):
        t0 = time.perf_counter()
        try:
            sec, lo, hi = fn()
            tflops = flops_step / sec / 1e12
            row = dict(config=name, variant=variant, seq_per_s=B / sec, ms_per_step=sec * 1e3,
                       ms_min=lo * 1e3, ms_max=hi * 1e3, tflops=tflops,
                       mfu=tflops / peaks["datasheet"] if peaks["datasheet"] else None,
                       of_measured_matmul=tflops / peaks["measured"] if peaks["measured"] else None)
        except Exception as e:  # noqa: BLE001 - a failed variant is a row in the table
            traceback.print_exc()
            row = dict(config=name, variant=variant, error=f"{type(e).__name__}: {str(e)[:200]}")
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        log(format_row(row))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return row

    built = {}  # the graph variant reuses the compiled variant's model: no second compilation

    def ours(fast, compiled, graph):
        def run():
            if (fast, compiled) not in built:
                torch.manual_seed(0)
                model = BertModel(config).to(device).train().set_fast(fast)
                forward = compile_ours(model, device, args.compile_scope) if compiled else model
                built[fast, compiled] = forward, make_optimizer(model.parameters(), device, args.optimizer)[0]
            forward, opt = built[fast, compiled]
            static = {k: v.clone() for k, v in batches[0].items()}
            step = make_step(forward, opt, static, device)
            if graph:
                step = capture_step(step, device)
            return time_steps(step, batches, static, device, args.steps, args.repeats)
        return run

    def theirs(compiled):
        def run():
            torch.manual_seed(0)
            model = hf_model(config)
            if model is None:
                raise RuntimeError("transformers is not installed")
            model = model.to(device).train()
            forward = compile_fn(model, device, fullgraph=False) if compiled else model
            opt, _ = make_optimizer(model.parameters(), device, args.optimizer)
            static = {k: v.clone() for k, v in batches[0].items()}
            return time_steps(make_step(forward, opt, static, device), batches, static, device,
                              args.steps, args.repeats)
        return run

    variants = {
        "minibert reference": ours(False, False, False),
        "minibert fast": ours(True, False, False),
        "minibert compiled": ours(True, True, False),
    }
    if not args.no_hf:
        variants["transformers eager"] = theirs(False)
        variants["transformers compiled"] = theirs(True)
    # last: a capture that fails can leave the CUDA generator unusable for what follows
    variants["minibert compiled+graph"] = ours(True, True, True)
    for variant, fn in variants.items():
        if args.variants and not any(v in variant for v in args.variants.split(",")):
            continue
        record(variant, fn)
    return rows


# ---- the real data mix ---------------------------------------------------------------------------


def read_mix_sentences(data_dir: Path, limit=None) -> list:
    """Every training sentence of the multitask mix (SST, both sides of Quora and STS pairs)."""
    from minibert.data import task_sentences
    sentences = task_sentences(data_dir)
    return sentences[:limit] if limit else sentences


def bench_real_mix(args, device, log) -> dict:
    """Real-token fraction of the bucketed mix, and training tokens/s on it (MiniLM-L6 config)."""
    from minibert.paths import data_dir, weights_dir
    from minibert.tokenizer import WordPieceTokenizer

    tok = WordPieceTokenizer.from_vocab(weights_dir(args.weights) / "vocab.txt")
    sentences = read_mix_sentences(data_dir(args.data_dir), limit=2000 if args.tiny else None)
    t0 = time.perf_counter()
    ids = tok.encode_batch(sentences, max_length=args.length)
    lengths = [len(x) for x in ids]
    log(f"real mix: {len(ids)} sentences tokenized in {time.perf_counter() - t0:.1f}s, "
        f"mean length {statistics.mean(lengths):.1f}, max {max(lengths)}")
    g = torch.Generator().manual_seed(0)
    bucketed = bucketed_batches(lengths, args.batch, shuffle=True, generator=g)
    random_order = torch.randperm(len(ids), generator=g).tolist()
    unbucketed = [random_order[i:i + args.batch] for i in range(0, len(ids), args.batch)]
    result = dict(sentences=len(ids), mean_length=statistics.mean(lengths), max_length=max(lengths),
                  real_fraction_bucketed=real_token_fraction(bucketed, lengths),
                  real_fraction_dynamic_unbucketed=real_token_fraction(unbucketed, lengths),
                  real_fraction_pad_to_max=statistics.mean(lengths) / args.length)
    log(f"real-token fraction: bucketed {result['real_fraction_bucketed']:.3f}, dynamic padding "
        f"without bucketing {result['real_fraction_dynamic_unbucketed']:.3f}, padding to "
        f"{args.length} {result['real_fraction_pad_to_max']:.3f}")

    config = BertConfig(**CONFIGS["tiny" if args.tiny else "minilm-l6"])
    n = min(len(bucketed), args.mix_batches)
    batches = [pad_batch([ids[i] for i in b]) for b in bucketed[:n]]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    positions = sum(b["input_ids"].numel() for b in batches)
    for label, compiled in (("minibert fast", False), ("minibert compiled (dynamic shapes)", True)):
        try:
            torch.manual_seed(0)
            model = BertModel(config).to(device).train().set_fast(True)
            forward = compile_ours(model, device, args.compile_scope, dynamic=True) if compiled else model
            opt, _ = make_optimizer(model.parameters(), device, args.optimizer)
            for b in batches[:3]:  # warm-up (compiles)
                make_step(forward, opt, b, device)()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for b in batches:
                make_step(forward, opt, b, device)()
            if device.type == "cuda":
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            result[label] = dict(batches=n, real_tokens_per_s=real / sec, positions_per_s=positions / sec,
                                 real_fraction=real / positions)
            log(f"real mix, {label}: {n} batches, {real / sec:,.0f} real tokens/s "
                f"({positions / sec:,.0f} positions/s, {real / positions:.3f} real)")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            result[label] = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
            log(f"real mix, {label}: ERROR {result[label]['error']}")
    return result


# ---- report ---------------------------------------------------------------------------------------


TABLE_HEADER = ("| config | variant | seq/s | ms/step (min-max) | TFLOP/s | MFU (datasheet peak) "
                "| of the measured matmul rate |")


def format_row(r) -> str:
    if "error" in r:
        return f"| {r['config']} | {r['variant']} | error: {r['error']} | | | | |"

    def percent(x):
        return f"{100 * x:.1f}%" if x is not None else "n/a"
    return (f"| {r['config']} | {r['variant']} | {r['seq_per_s']:,.0f} | {r['ms_per_step']:.2f} "
            f"({r['ms_min']:.2f}-{r['ms_max']:.2f}) | {r['tflops']:.1f} | {percent(r.get('mfu'))} "
            f"| {percent(r.get('of_measured_matmul'))} |")


def markdown(meta, rows, mix) -> str:
    lines = [f"# Training-step benchmark ({meta['date']})", "",
             f"- device: {meta['device']}; torch {meta['torch']}; transformers {meta['transformers']}",
             f"- command: `{meta['command']}`",
             f"- batch {meta['batch']} x length {meta['length']}, bf16 autocast on CUDA, "
             f"optimizer {meta['optimizer']}, compile scope {meta['compile_scope']}",
             "- dense bf16 peak from the datasheet (MFU's denominator): "
             + (f"{meta['datasheet_tflops']:.1f} TFLOP/s" if meta["datasheet_tflops"] else "n/a (not in the table)"),
             "- measured bf16 matmul rate: "
             + (f"{meta['peak_tflops']:.0f} TFLOP/s" if meta["peak_tflops"] else "n/a (no CUDA)"),
             "", TABLE_HEADER, "|" + " --- |" * 7]
    lines += [format_row(r) for r in rows]
    if mix:
        lines += ["", "Real data mix (SST + Quora + STS training sentences, batch "
                  f"{meta['batch']}, length-bucketed):", "", "```", json.dumps(mix, indent=1), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibert bench", description=__doc__.split("\n")[0],
                                allow_abbrev=False)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--tiny", action="store_true", help="a tiny config and few steps (default without CUDA)")
    p.add_argument("--configs", default="minilm-l6,bert-base", help=f"comma-separated, of {list(CONFIGS)}")
    p.add_argument("--variants", default="", help="comma-separated substrings of variant names to run")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile-scope", choices=("layer", "model"), default="layer")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers rows")
    p.add_argument("--no-mix", action="store_true", help="skip the real-data-mix measurement")
    p.add_argument("--mix-batches", type=int, default=200)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--weights", default=None, help="folder holding vocab.txt (default all-MiniLM-L6-v2)")
    p.add_argument("--out", default=None, help="folder for bench.json and bench.md")
    p.add_argument("--optimizer", choices=("minibert", "torch"), default="minibert",
                   help="minibert.optim.AdamW(foreach=True) or torch.optim.AdamW (fused on CUDA)")
    args = p.parse_args(argv)

    device = pick_device(args.device)
    if device.type != "cuda" and not args.tiny:
        print("no CUDA: running the tiny config untimed (--tiny)")
        args.tiny = True
    if args.tiny:
        args.configs, args.batch, args.length = "tiny", 4, 32
        args.steps, args.repeats, args.mix_batches = 2, 1, 3
    names = args.configs.split(",")
    for n in names:
        if n not in CONFIGS:
            p.error(f"unknown config {n!r}: expected one of {list(CONFIGS)}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    def log(msg):
        print(msg, flush=True)

    try:
        import transformers
        hf_version = transformers.__version__
    except ImportError:
        hf_version = "not installed"
    peak = matmul_peak_tflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peaks = dict(measured=peak, datasheet=datasheet_peak_tflops(name) if device.type == "cuda" else None)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                device=name,
                torch=torch.__version__, transformers=hf_version, batch=args.batch, length=args.length,
                command="python -m minibert bench " + " ".join(sys.argv[2:] if argv is None else argv),
                optimizer=make_optimizer([torch.zeros(1, requires_grad=True)], device, args.optimizer)[1],
                compile_scope=args.compile_scope, peak_tflops=peak, datasheet_tflops=peaks["datasheet"])
    log(f"{meta['device']}, torch {meta['torch']}, transformers {hf_version}, optimizer {meta['optimizer']}"
        + (f", bf16 datasheet peak {peaks['datasheet']:.1f} TFLOP/s" if peaks["datasheet"] else "")
        + (f", measured bf16 matmul {peak:.0f} TFLOP/s" if peak else ""))
    log(TABLE_HEADER)
    rows = []
    for n in names:
        rows += bench_config(n, BertConfig(**CONFIGS[n]), args, device, peaks, log)
    mix = None
    if not args.no_mix:
        try:
            mix = bench_real_mix(args, device, log)
        except (FileNotFoundError, ImportError, ValueError) as e:  # DataError: no data folder
            log(f"real mix skipped: {e}")
            mix = dict(error=str(e))
    report = markdown(meta, rows, mix)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows, mix=mix), indent=1) + "\n")
        (out / "bench.md").write_text(report)
    log("\n" + report)
    return 0
