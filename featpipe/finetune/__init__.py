"""The end-to-end path: train a new head on a frozen base with augmentation, then fine-tune the base's top.

The recipe of Deep Learning with Python (ch. 8) and the TensorFlow transfer-learning tutorial. This is the
expensive path the feature cache avoids. Three modules, one job each:

- `featpipe.finetune.tuner`: `FineTuner`, the model and its two phases, on its own copy of the base;
- `featpipe.finetune.resume`: the per-epoch state that lets a killed run resume from its last finished epoch;
- `featpipe.finetune.run`: `run_finetune`, the run directory (key, reuse, record in the shared run format).
"""

from featpipe.finetune.run import CHECKPOINT_DIR, MODEL_FILE, FinetuneRun, run_finetune, run_key, run_name
from featpipe.finetune.tuner import PHASES, FineTuner, base_layers, copy_base, unfreeze_start

__all__ = ["CHECKPOINT_DIR", "MODEL_FILE", "PHASES", "FineTuner", "FinetuneRun", "base_layers", "copy_base",
           "run_finetune", "run_key", "run_name", "unfreeze_start"]
