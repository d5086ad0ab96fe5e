"""Training: tokenisation with loss masks, stream + visual packing, recipes, the trainer, checkpoints, AdaLRS, soup, LoRA."""
