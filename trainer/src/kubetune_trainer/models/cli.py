"""`kubetune-trainer model tiny`: a random-weight model for laptops, tests and the demo."""

from __future__ import annotations

import argparse
import glob
import tempfile
from pathlib import Path

from kubetune_trainer import storage
from kubetune_trainer.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="model utilities")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    tiny = commands.add_parser(
        "tiny",
        help="write a tiny random-weight Qwen2-style model with a tokenizer trained on your text",
    )
    tiny.add_argument("--corpus", action="append", required=True, help="JSON/JSONL file or glob; repeatable")
    tiny.add_argument("--output", required=True, help="directory or URI to write the model to")
    tiny.add_argument("--vocab-size", type=int, default=512)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--hidden", type=int, default=64)
    tiny.add_argument("--heads", type=int, default=4)
    tiny.add_argument("--kv-heads", type=int, default=2)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=run_tiny)


def check_shape(args: argparse.Namespace) -> None:
    """Shapes Qwen2 would accept here and fail on at the first forward pass."""
    for name in ("vocab_size", "layers", "hidden", "heads", "kv_heads"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1")
    if args.hidden % args.heads or (args.hidden // args.heads) % 2:
        raise ConfigError(
            f"--hidden ({args.hidden}) / --heads ({args.heads}) must be a whole, even head size"
        )
    if args.heads % args.kv_heads:
        raise ConfigError(f"--kv-heads ({args.kv_heads}) must divide --heads ({args.heads})")


def run_tiny(args: argparse.Namespace) -> int:
    from kubetune_trainer.models.tiny import corpus_from_files, write_tiny_model

    check_shape(args)
    paths: list[Path] = []
    for pattern in args.corpus:
        matched = sorted(glob.glob(pattern, recursive=True))
        if not matched:
            raise ConfigError(f"--corpus {pattern}: no file matches")
        paths.extend(Path(p) for p in matched if Path(p).is_file())
    texts = corpus_from_files(paths)
    if not texts:
        raise ConfigError("--corpus: the files hold no text to train a tokenizer on")
    target = storage.parse(args.output)
    shape = (args.vocab_size, args.layers, args.hidden, args.heads, args.kv_heads, args.seed)
    if target.scheme == "file":
        write_tiny_model(Path(target.path), texts, *shape)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_tiny_model(Path(tmp), texts, *shape)
            storage.upload_dir(Path(tmp), args.output)
    print(f"wrote tiny model to {target.uri}")
    return 0
