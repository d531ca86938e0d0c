"""`polywake` command line. Each sub-command lives in the module that does the work; this file
only maps names to modules (each exposes ``add_arguments(parser)`` and ``run(args) -> int``)
and turns expected errors into one clear line and a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules are imported only when their command runs, so
# `polywake detect` never imports torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "features": ("polywake.commands.features", "print per-frame log-mel features of audio files"),
    "demo": ("polywake.commands.demo", "run the shipped default model on the shipped example"),
    "detect": ("polywake.commands.detect", "print wake-word detections in audio files"),
    "listen": ("polywake.runtime.listen", "listen on a microphone, file or stdin; route events"),
    "serve-wyoming": ("polywake.runtime.wyoming_server", "Wyoming wake-word server (Home Assistant)"),
    "enroll": ("polywake.runtime.enroll", "record k examples of a new wake word from the microphone"),
    "synth": ("polywake.data.synth", "synthesize wake-word and negative clips with offline TTS"),
    "pretrain": ("polywake.train.pretrain", "pretrain the backbone on a word-recognition task"),
    "distill": ("polywake.train.distill", "pretrain a small backbone by distillation from a larger one"),
    "train": ("polywake.train.wakewords", "train a multi-target wake-word model"),
    "add-word": ("polywake.train.add_word", "add (or remove) a wake word in an existing model"),
    "eval": ("polywake.evaluate", "FRR vs false accepts per hour, DET plot, confusions"),
    "export": ("polywake.export", "export a model to a .pwk (ONNX + numpy step; optionally int8)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polywake", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"polywake: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        print(f"polywake {name}: not available ({e})", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"polywake {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from .errors import PolywakeError

    try:
        return int(module.run(args) or 0)
    except PolywakeError as e:
        print(f"polywake {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
