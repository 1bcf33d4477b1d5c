"""Training pieces: losses, metrics, schedules and the LightningModule."""
