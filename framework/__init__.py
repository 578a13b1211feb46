"""The training framework behind train.py: config, data, models, optimizers, distributed set-up, the loop,
checkpoints and run logs, each in the module named after it (see docs/DESIGN.md)."""
