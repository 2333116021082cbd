"""What ``OnlineRLTrainer`` composes around a backend: callbacks, the metrics files and reward curve, the tiny model's warm-up."""
