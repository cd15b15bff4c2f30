"""Training and finetuning BasicVSR++ with torch.distributed."""
