"""GD-DP: differentially private local training.

Vocabulary (as in tensorflow-privacy): a *record* is one training example's gradient; a *sample* is
the batch of records of one optimizer step; a *query* clips every record, sums the sample and adds
noise. The mechanism (``laplace_query``, ``gaussian_query``) is separate from the optimizer
(``optimizer``), and the privacy spent is counted explicitly (``accountant``), because the optimizer
discards the DP events; ``spent`` keeps that count on disk across restarts. ``plan`` decides an agent's
setting for a task (``settings``); the trainer (``edge_agent.trainer``) imports the setting and applies it.
Nothing here imports the trainer.
"""

import sys

# tensorflow-privacy's package __init__ imports its whole API (estimators, logistic regression, privacy
# tests: pandas, scikit-learn, TensorFlow Probability), about 110 MiB resident in every DP agent; the
# library's own switch skips it, and the modules here import the submodules they use by name.
sys.skip_tf_privacy_import = True  # type: ignore[attr-defined]
