"""The run directory and its event protocol: the only channel between the trainer and its viewers."""
