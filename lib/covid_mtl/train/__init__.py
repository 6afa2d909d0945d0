"""Training: public sets to a manifest, samples, augmentation, losses, the loop and model selection."""
