"""Train a ViT: ``python train.py model=vit_b16 trainer.devices=2`` (see conf/train.yaml)."""

from vitlab.train import main

if __name__ == "__main__":
    main()
