"""Training: patch datasets, augmentation, losses, the trainer, checkpoints and in-training validation."""
