"""BPCV-FL shared kernel: topics, signed envelopes, model codec, identities, data, PoQ rules, CLI."""

__version__ = "0.1.0"
