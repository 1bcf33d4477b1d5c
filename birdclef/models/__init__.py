"""Networks: plain nn.Modules mapping mel [B, 1, features, frames] to logits [B, outputs]."""
