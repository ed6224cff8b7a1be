"""The seeds' Keras recipe for Fashion-MNIST, as the tutorials write it, on Keras 3.

    KERAS_BACKEND=torch python benchmarks/fashion_seed_keras.py --data DIR [--epochs 15]
        [--limit N] [--seed 0]

The model of the seeds (examples/fashion_cnn.cnn in cnnc): a Sequential of Conv2D(32, 3,
padding="same", relu), MaxPooling2D(2), Conv2D(64, 3, padding="same", relu), MaxPooling2D(2),
Flatten, Dense(128, relu), Dense(10, softmax); compiled with optimizer="adam" (learning rate
1e-3, constant) and the cross-entropy loss; `model.fit` with Keras's defaults (batch 32,
shuffled every epoch, no validation split). Pixels scaled to [0, 1], as the tutorials do.

TensorFlow is not needed: Keras 3 runs on its PyTorch backend (KERAS_BACKEND=torch, set here
when unset), so the layers compute with the same library as cnnc's torch backend.

It prints a line with Keras's version and backend, then one JSON line per epoch, {"epoch",
"train_seconds", "test_accuracy", "test_seconds"}: the test split is scored after each epoch (a callback), so
that benchmarks/time_to_accuracy.py can tell when an accuracy is reached; it leaves the
scoring's time out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fashion_fast_torch import load_fashion  # noqa: E402 (the same IDX reader)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the folder of Fashion-MNIST's IDX files")
    ap.add_argument("--epochs", type=int, default=15, help="how many epochs to run at most")
    ap.add_argument("--limit", type=int, default=None, help="only the first N training images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import keras
    from keras import layers

    print(json.dumps({"keras": keras.__version__, "backend": keras.backend.backend()}),
          flush=True)
    keras.utils.set_random_seed(args.seed)
    train_x, train_y, test_x, test_y = load_fashion(args.data)
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    train_x, test_x = train_x[..., None], test_x[..., None]

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
        layers.MaxPooling2D((2, 2), strides=2),
        layers.Conv2D(64, (3, 3), padding="same", activation="relu"),
        layers.MaxPooling2D((2, 2), strides=2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    print(json.dumps({"parameters": model.count_params()}), flush=True)

    class ScoreTest(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            started = time.perf_counter()
            _, accuracy = self.model.evaluate(test_x, test_y, batch_size=1000, verbose=0)
            print(json.dumps({"epoch": epoch + 1, "train_loss": round(logs["loss"], 5),
                              "train_seconds": round(started - self.began, 4),
                              "test_accuracy": round(float(accuracy), 6),
                              "test_seconds": round(time.perf_counter() - started, 4)}),
                  flush=True)

    model.fit(train_x, train_y, epochs=args.epochs, verbose=0, callbacks=[ScoreTest()])


if __name__ == "__main__":
    main()
