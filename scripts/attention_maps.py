"""Attention rollout of a trained model over some images: one PNG per image (the image | its rollout
overlaid, titled with the prediction), optionally logged to W&B.

    python scripts/attention_maps.py --ckpt logs/train/runs/<time>/checkpoints/last.ckpt \\
        --images pizza.jpg data/pizza_steak_sushi/test --out attention [--wandb]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitlab.checkpoint import load_classifier
from vitlab.loggers import wandb_mode
from vitlab.models.preprocessing import checkpoint_preprocessing
from vitlab.predict import class_probabilities, image_files, prepared_batches
from vitlab.viz.attention import save_attention_overlays


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint written by train.py")
    parser.add_argument(
        "--images", required=True, nargs="+", help="image files and/or folders (searched recursively)"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--wandb", action="store_true", help="also log the PNGs to W&B (offline without an API key)"
    )
    parser.add_argument("--project", default="vitlab", help="the W&B project")
    args = parser.parse_args()

    module = load_classifier(args.ckpt)
    files = image_files(args.images)
    written: list[Path] = []
    preprocessing = checkpoint_preprocessing(args.ckpt, module.hparams)
    for batch, pictures, inputs in prepared_batches(module, files, preprocessing, args.batch_size):
        probabilities = class_probabilities(module, inputs)
        titles = [
            f"rollout | pred: {module.class_names[int(p.argmax())]} ({float(p.max()):.2f})"
            for p in probabilities
        ]
        paths = [args.out / f"{len(written) + i:03d}_{file.stem}.png" for i, file in enumerate(batch)]
        written += save_attention_overlays(module.model, inputs, pictures, paths, titles)
    print(f"{len(written)} attention maps in {args.out}")

    if args.wandb:
        import wandb

        with wandb.init(project=args.project, job_type="attention", mode=wandb_mode(), dir=args.out) as run:
            run.config.update({"ckpt": str(args.ckpt), "images": len(files)})
            run.log(
                {
                    "attention": [
                        wandb.Image(str(p), caption=f.name) for p, f in zip(written, files, strict=True)
                    ]
                }
            )


if __name__ == "__main__":
    main()
