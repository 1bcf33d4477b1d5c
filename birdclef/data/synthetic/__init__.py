"""The built-in synthetic BirdCLEF dataset (competition layout plus hidden truth)."""

from birdclef.data.synthetic.generate import dataset_dir, ensure_synthetic, generate
from birdclef.data.synthetic.spec import SynthSpec

__all__ = ["SynthSpec", "dataset_dir", "ensure_synthetic", "generate"]
