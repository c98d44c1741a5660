"""Training: patch datasets, augmentation (spatial, intensity), losses, the trainer (with DDP and a
monitor), checkpoints, in-training validation, and the training log and its curves."""
