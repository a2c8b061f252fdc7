"""BPCV-FL shared kernel: topics, signed envelopes, typed messages, model codec, identities, config, task,
data, models, PoQ rules. It imports no role package (the `bpcv` command lives in bpcv_app)."""

__version__ = "0.1.0"
