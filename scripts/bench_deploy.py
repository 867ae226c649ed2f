"""What deploying a trained classifier costs on this CPU, runtime by runtime, beside the course's
notebook 09 (on its own machine: EffNetB2 29 MB, 0.027 s per image; ViT-B/16 327 MB, 0.064 s).

    python scripts/bench_deploy.py --ckpt <transfer run>/checkpoints/last.ckpt --ckpt <small-data v2 run>/checkpoints/last.ckpt

For each checkpoint and runtime (PyTorch eager fp32, torch.compile, ONNX Runtime fp32, ONNX Runtime
int8 from dynamic quantisation): accuracy on the run's test split (or ``--images``), the size of
what an app would load (the weights-only state dict; the .onnx file) in MiB (the course's "MB" is
bytes // 2**20), and the latency of one image (batch 1) with all cores (``--threads``): the median
of ``--repeats`` predictions after ``--warmup`` untimed ones, the runtimes interleaved
(``vitlab.bench.interleaved``). Decoding and preprocessing one image is timed on its own. The load
average is printed before and after: on a busy machine the times are upper bounds.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vitlab.bench import interleaved
from vitlab.checkpoint import load_classifier
from vitlab.cli.command import user_errors_exit
from vitlab.data import eval_transform, load_image
from vitlab.deploy import require
from vitlab.deploy.onnx import OnnxClassifier, export_onnx, metadata, quantize_dynamic
from vitlab.export import accuracy, batched, labelled_images
from vitlab.models.preprocessing import checkpoint_preprocessing
from vitlab.provenance import Provenance, machine_roots, write_record
from vitlab.tables import markdown_table

COLUMNS = ["model", "runtime", "test acc", "size (MiB)", "batch 1 (s)", "preprocessing (s)"]
# The course's notebook 09 on its own machine's CPU (whole prediction, preprocessing included).
COURSE = [
    {
        "model": "EffNetB2 feature extractor (course)",
        "runtime": "PyTorch eager",
        "size (MiB)": 29,
        "batch 1 (s)": 0.027,
    },
    {
        "model": "ViT-B/16 feature extractor (course)",
        "runtime": "PyTorch eager",
        "size (MiB)": 327,
        "batch 1 (s)": 0.064,
    },
]


def state_dict_mib(model: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 2**20


def runtimes(
    ckpt: Path, folder: Path, threads: int
) -> tuple[dict[str, Callable[[Tensor], Tensor]], dict[str, float], Any]:
    """Each runtime's logits function and the size of what it loads, and the checkpoint's module."""
    module = load_classifier(ckpt).eval()
    preprocessing = checkpoint_preprocessing(ckpt, module.hparams)
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    export_onnx(
        module.model, fp32, module.image_size, metadata(module.class_names, module.image_size, preprocessing)
    )
    quantize_dynamic(fp32, int8)
    size = state_dict_mib(module.model)
    logits = {
        "PyTorch eager fp32": module.model,
        "torch.compile": torch.compile(module.model),
        "ONNX Runtime fp32": OnnxClassifier(fp32, threads),
        "ONNX Runtime int8": OnnxClassifier(int8, threads),
    }
    sizes = {"PyTorch eager fp32": size, "torch.compile": size}
    sizes |= {
        "ONNX Runtime fp32": fp32.stat().st_size / 2**20,
        "ONNX Runtime int8": int8.stat().st_size / 2**20,
    }
    return logits, sizes, (module, preprocessing)


def untimed_result(call: Callable[[], object]) -> Callable[[], None]:
    """A run for ``interleaved``, which takes a returned value for the seconds the run timed itself."""

    def run() -> None:
        call()

    return run


def measure(
    ckpt: Path, images: list[str] | None, repeats: int, warmup: int, threads: int
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        logits, sizes, (module, preprocessing) = runtimes(ckpt, Path(folder), threads)
        files, labels = labelled_images(images, module, ckpt)
        pipeline = eval_transform(module.image_size, preprocessing)
        inputs = torch.stack([pipeline(load_image(f)) for f in files])
        one = inputs[:1]
        with torch.inference_mode():
            timings = interleaved(
                {name: untimed_result(lambda f=f: f(one)) for name, f in logits.items()}, repeats, warmup
            )
            accuracies = {name: accuracy(batched(f, inputs, 32), labels) for name, f in logits.items()}
        prepare = interleaved(
            {"prepare": untimed_result(lambda: pipeline(load_image(files[0])))}, repeats, warmup
        )
        prepare = prepare["prepare"]
    name = f"{module.hparams['model_name']} {module.image_size} px ({ckpt.parents[1].name})"
    return [
        {
            "model": name,
            "runtime": runtime,
            "test acc": accuracies[runtime],
            "size (MiB)": sizes[runtime],
            "batch 1 (s)": timings[runtime].median,
            "preprocessing (s)": prepare.median,
        }
        for runtime in logits
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt", type=Path, action="append", required=True, help="a training checkpoint (repeatable)"
    )
    parser.add_argument(
        "--images", nargs="+", help="images or folders to test on (default: each run's test split)"
    )
    parser.add_argument("--repeats", type=int, default=50, help="timed predictions per runtime (median)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed predictions first")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all cores)"
    )
    parser.add_argument(
        "--record", type=Path, help="also write the table with its provenance here (docs/runs/deploy/...)"
    )
    args = parser.parse_args()
    provenance = Provenance(None, sys.argv[1:])
    with user_errors_exit():
        require("onnx", "onnxscript", "onnxruntime", purpose="scripts/bench_deploy.py")
        torch.set_num_threads(args.threads)
        load = {"before": [round(x, 2) for x in os.getloadavg()]}
        print(
            f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs, {args.threads} threads)"
        )
        rows = [
            row
            for ckpt in args.ckpt
            for row in measure(ckpt, args.images, args.repeats, args.warmup, args.threads)
        ]
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        load["after"] = [round(x, 2) for x in os.getloadavg()]
    print(markdown_table([*rows, *COURSE], COLUMNS), end="")
    if args.record is not None:  # a run record for scripts/results_tables.py
        results = {"rows": rows, "course": COURSE, "load_average": load, "threads": args.threads}
        results["provenance"] = provenance.record()
        roots = {f"<run {i}>": ckpt.resolve().parents[1] for i, ckpt in enumerate(args.ckpt)}
        write_record(args.record, results, roots={**machine_roots(), **roots})
        print(f"recorded {args.record}")


if __name__ == "__main__":
    main()
