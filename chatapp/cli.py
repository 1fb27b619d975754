"""The `chatapp` command. Errors are one line on stderr, never a traceback.

Starting is cheap: at import this file reads only data-only modules
(BACKEND_CHOICES, EXPORT_TYPES), so `chatapp --version` costs about Python's
own start. What would pull in more is read when it is used: the presets when
`train` checks --preset, SamplingParams (and numpy) when `run` builds its
parameters; help that quotes them is written only when help is shown.
"""

from __future__ import annotations

import argparse
import os
import sys

from chatapp import EXIT_ERROR, EXIT_INTERRUPTED, __version__
from chatapp.interrupts import interrupt_seen
from chatapp.models.opening import BACKEND_CHOICES, COMPILE_CHOICES, COMPILE_VARIABLE, default_compile
from chatapp.training_flags import FINETUNE_OPTIONS, TRAIN_OPTIONS
from model.errors import one_line
from model.network.device import DEVICE_CHOICES
from quant.gguf_layout import DEFAULT_TYPE, EXPORT_TYPES

EXPORT_FORMATS = ("gguf", "ollama", "hf")
LONG_RUNNING_AUTO = "on for a model folder (the torch engine) on CUDA and on the CPU"

# `chatapp run`'s sampling options: (flag, its SamplingParams field, type, what it does). Each is
# stored under the field's name, None when not given; commands.sampling_from_args then takes
# SamplingParams's default for it, and --help shows that default.
SAMPLING_OPTIONS = (
    ("--temperature", "temperature", float, "0 is greedy"),
    ("--top-p", "top_p", float, "nucleus sampling, in (0, 1]; 1 is off"),
    ("--top-k", "top_k", int, "keep the k most likely tokens; 0 is off"),
    ("--min-p", "min_p", float, "drop tokens below min-p x the top probability; 0 is off"),
    ("--repeat-penalty", "repetition_penalty", float, "penalise recent tokens; 1 is off"),
    ("--max-tokens", "max_tokens", int, "longest reply in tokens"),
    ("--seed", "seed", int, "fix the random seed to reproduce a reply"),
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose arguments may take a function as help: it is called (and
    what it imports loaded) only when help is shown."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.late_help = {}  # argparse.Action -> a function returning its help text

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        write_help = kwargs.get("help")
        if not callable(write_help):
            return super().add_argument(*args, **kwargs)
        action = super().add_argument(*args, **{**kwargs, "help": "(written when help is shown)"})
        self.late_help[action] = write_help
        return action

    def format_help(self) -> str:
        for action, write_help in self.late_help.items():
            action.help = write_help()
        self.late_help.clear()
        return super().format_help()


def sampling_help(field: str, text: str):
    def write() -> str:
        from model.inference.sampling import SamplingParams

        default = getattr(SamplingParams, field)
        return text if default is None else f"{text} (default {default})"

    return write


def preset_name(value: str) -> str:
    """--preset: a name from model.training.presets.PRESETS."""
    from model.training.presets import PRESETS

    if value not in PRESETS:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(map(repr, PRESETS))})")
    return value


def at_least_one(value: str) -> int:
    """--steps, --batch-size: an integer >= 1 (0 would silently mean the default, -1 an untrained model)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {number}")
    return number


def preset_help() -> str:
    from model.training.presets import PRESETS

    sizes = "; ".join(
        f"{name}: {p.n_layer} layers x {p.n_embd} wide, context {p.context_length}, {p.steps} steps"
        for name, p in PRESETS.items()
    )
    from model.training.options import TrainOptions

    return f"model size and schedule ({sizes}; default {TrainOptions.preset})"


def option_help(options_class: str, field: str, text: str):
    def write() -> str:
        from dataclasses import MISSING, fields

        from model.training import options

        default = next(f.default for f in fields(getattr(options, options_class)) if f.name == field)
        if field == "preset":
            return preset_help()
        text_with_constants = text.replace("DEFAULT_FINETUNE_STEPS", str(options.DEFAULT_FINETUNE_STEPS))
        if default in (None, False, MISSING) or "(default" in text:
            return text_with_constants
        return f"{text_with_constants} (default {default})"

    return write


def add_option_arguments(parser: Parser, options_class: str, table) -> None:
    """Flags made from TRAIN_OPTIONS or FINETUNE_OPTIONS; --out is required (its field has no default)."""
    types = {"preset": preset_name, "at_least_one": at_least_one}
    for flag, field, kind, text in table:
        write_help = option_help(options_class, field, text)
        if kind is bool:
            parser.add_argument(flag, dest=field, action="store_true", default=None, help=write_help)
        else:
            parser.add_argument(
                flag,
                dest=field,
                type=types.get(kind, kind),
                default=None,
                required=field == "out",
                metavar=flag.removeprefix("--").replace("-", "_").upper(),
                help=write_help,
            )


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_CHOICES,
        help="the engine: torch runs a model folder, llama.cpp a GGUF file; auto picks by the model (default auto)",
    )


class ThinkingAction(argparse.Action):
    """--thinking on|off|default: SamplingParams.thinking (True, False, None), and that it was given
    (a preset's thinking then does not replace it)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.thinking = {"on": True, "off": False}.get(str(values))
        namespace.thinking_given = True


def add_chat_preset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="a chat preset (`chatapp preset list`): its system prompt, sampling, thinking and model, "
        "where the other options do not say",
    )
    parser.add_argument(
        "--thinking",
        choices=("on", "off", "default"),
        action=ThinkingAction,
        default=None,
        help="a reasoning model's thinking: on, off, or the model's default (default: the preset's, else default)",
    )


def add_model_argument(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    help_text = "a model folder, a GGUF file, or a name from `chatapp models` (default: the built-in model)"
    if positional:
        parser.add_argument("model", nargs="?", default=None, help=help_text)
    else:
        parser.add_argument("--model", "-m", default=None, help=help_text)


def add_sampling_arguments(parser: Parser) -> None:
    for flag, field, kind, text in SAMPLING_OPTIONS:
        parser.add_argument(
            flag,
            dest=field,
            metavar=flag.removeprefix("--").replace("-", "_").upper(),
            type=kind,
            default=None,
            help=sampling_help(field, text),
        )


def context_help() -> str:
    from quant.llama_load import FOREIGN_MAX_CONTEXT

    return f"context for a GGUF model not made by chatapp (default: its own, at most {FOREIGN_MAX_CONTEXT})"


def add_context_argument(parser: Parser) -> None:
    parser.add_argument("--context", type=int, default=None, metavar="TOKENS", help=context_help)


def add_threads_arguments(parser: Parser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads that generate tokens (default: by the model's size, one per core at most; "
        "for the TUI, [model] threads in settings.toml)",
    )
    parser.add_argument(
        "--threads-batch",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads that read the prompt (default: --threads when given, else by the model's size)",
    )


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="chat with a model on an OpenAI-compatible server (chatapp serve, llama-server, Ollama, "
        "LM Studio, vLLM), e.g. http://localhost:11434/v1; the model is then the server's model name",
    )
    parser.add_argument("--api-key", default=None, help="the endpoint's API key (default: $CHATAPP_API_KEY, else none)")


def add_compile_argument(parser: argparse.ArgumentParser, auto: str) -> None:
    parser.add_argument(
        "--compile",
        default=default_compile(),
        choices=COMPILE_CHOICES,
        help="compile the torch engine's decode step with torch.compile, in the background: replies "
        f"start at once, eagerly, and speed up when it is ready (auto: {auto}; "
        f"default: ${COMPILE_VARIABLE}, else auto)",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", choices=DEVICE_CHOICES, help="torch device (default auto: CUDA, MPS, then CPU)"
    )


def build_parser() -> Parser:
    parser = Parser(prog="chatapp", description="Chat, offline, with a GPT trained from scratch.")
    parser.add_argument("--version", action="version", version=f"chatapp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = commands.add_parser("chat", help="chat in the terminal (the default command)")
    add_model_argument(chat, positional=True)
    chat.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="start in a new conversation with a chat preset (`chatapp preset list`): its system prompt, "
        "sampling, thinking and model",
    )
    add_backend_argument(chat)
    add_endpoint_arguments(chat)
    add_context_argument(chat)
    add_threads_arguments(chat)
    add_device_argument(chat)
    add_compile_argument(chat, LONG_RUNNING_AUTO)

    run = commands.add_parser("run", help="one reply to a prompt, streamed to stdout")
    run.add_argument("prompt", nargs="?", help="the message (read from stdin when omitted)")
    add_model_argument(run)
    add_backend_argument(run)
    run.add_argument("--system", default=None, help="a system prompt, e.g. 'You are Hamlet, Prince of Denmark.'")
    run.add_argument("--raw", action="store_true", help="continue the text as is, without the chat format")
    run.add_argument("--json", action="store_true", help="print the reply and its statistics as one JSON object")
    add_sampling_arguments(run)
    add_chat_preset_arguments(run)
    add_endpoint_arguments(run)
    add_context_argument(run)
    add_threads_arguments(run)
    add_device_argument(run)
    add_compile_argument(run, "off, as one reply ends before a compile would")

    train = commands.add_parser("train", help="train a GPT from scratch")
    add_option_arguments(train, "TrainOptions", TRAIN_OPTIONS)
    train.add_argument("--force", action="store_true", help="overwrite --out when it is not empty (without --resume)")
    add_device_argument(train)

    finetune = commands.add_parser("finetune", help="fine-tune a model for chat, with LoRA adapters or fully")
    finetune.add_argument("base", help="the base model: a model folder or a name from `chatapp models`")
    add_option_arguments(finetune, "FinetuneOptions", FINETUNE_OPTIONS)
    finetune.add_argument(
        "--force", action="store_true", help="overwrite --out when it is not empty (without --resume)"
    )
    add_device_argument(finetune)

    evaluate = commands.add_parser("eval", help="validation loss: nats per token, nats per character, perplexity")
    add_model_argument(evaluate, positional=True)
    evaluate.add_argument(
        "--data", default=None, help="text to evaluate on: its last 5%% per file (default: the built-in held-out split)"
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    add_device_argument(evaluate)

    bench = commands.add_parser("bench", help="prefill and decode speed, with and without the KV cache")
    add_model_argument(bench, positional=True)
    add_backend_argument(bench)
    bench.add_argument("--prompt-tokens", type=int, default=128)
    bench.add_argument("--gen-tokens", type=int, default=128)
    bench.add_argument("--runs", type=int, default=5)
    bench.add_argument("--no-compare", action="store_true", help="skip the run without the KV cache")
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--parallel",
        default=None,
        metavar="N[,N...]",
        help="the model on N parallel slots instead, N replies at once, for each N given (e.g. 1,2,4,8): "
        "aggregate and per-reply decode speed and first-token time",
    )
    bench.add_argument(
        "--in-process",
        action="store_true",
        help="run llama.cpp in this process instead of a worker process (to measure what the worker costs)",
    )
    add_context_argument(bench)
    add_threads_arguments(bench)
    add_device_argument(bench)
    add_compile_argument(bench, LONG_RUNNING_AUTO + "; the bench waits for it and reports its time")

    export = commands.add_parser(
        "export", help="export a model folder to GGUF (llama.cpp, LM Studio), Ollama or Hugging Face"
    )
    add_model_argument(export, positional=True)
    export.add_argument(
        "--format",
        default="gguf",
        choices=EXPORT_FORMATS,
        help="gguf: one file; ollama: a folder with the GGUF and a Modelfile; hf: a transformers folder (default gguf)",
    )
    export.add_argument(
        "-o",
        "--output",
        default=None,
        help="the file (gguf) or folder (ollama, hf) to write (default: NAME-TYPE.gguf, NAME-ollama, NAME-hf)",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace a file or folder that is not an earlier chatapp export (never the model folder itself)",
    )
    export.add_argument(
        "--type",
        default=DEFAULT_TYPE,
        choices=EXPORT_TYPES,
        metavar="TYPE",
        help=f"{', '.join(EXPORT_TYPES)} (default %(default)s)",
    )
    export.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="with --format ollama: write this chat preset's system prompt and sampling into the Modelfile",
    )

    serve = commands.add_parser(
        "serve", help="serve a model over the OpenAI API (/v1/chat/completions) for other programs"
    )
    add_model_argument(serve, positional=True)
    add_backend_argument(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument(
        "--api-key", default=None, help="require this bearer token (default: $CHATAPP_API_KEY, else none)"
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from this origin (repeatable; default: none)",
    )
    serve.add_argument(
        "--queue", type=int, default=16, help="requests that may wait for the engine; past it, 503 (default 16)"
    )
    serve.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="replies made at once, in one batch per step (default: from the model's size and the cores, shown "
        "at start; 1: one at a time, a GGUF model in a worker process)",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (any port) or NAME:PORT, e.g. a DNS name "
        "or a reverse proxy's (repeatable); by default only localhost, 127.0.0.1, [::1], --host "
        "and the IP address a request comes in on, with this port: a guard against DNS rebinding",
    )
    serve.add_argument(
        "--allow-any-host",
        action="store_true",
        help="answer whatever Host a request names (turns off the DNS-rebinding guard)",
    )
    add_context_argument(serve)
    add_threads_arguments(serve)
    add_device_argument(serve)
    add_compile_argument(serve, LONG_RUNNING_AUTO)

    models = commands.add_parser("models", help="list the models chatapp knows")
    models.add_argument("--json", action="store_true")

    pull = commands.add_parser("pull", help="download a GGUF model from the Hugging Face hub (into its cache)")
    pull.add_argument(
        "spec",
        metavar="REPO[:QUANT]",
        help="a model repo on the hub, e.g. bartowski/Llama-3.2-1B-Instruct-GGUF, with :QUANT to pick "
        "a quantization (default Q4_K_M, else the smallest of at least 4 bits), or the URL of one "
        ".gguf",
    )
    pull.add_argument("--json", action="store_true", help="one JSON object per line: the plan, progress, the result")

    rm = commands.add_parser("rm", help="remove a pulled model from the Hugging Face cache")
    rm.add_argument("name", help="what it was pulled as (REPO:QUANT), or its name or path in `chatapp models`")
    rm.add_argument("--yes", "-y", action="store_true", help="remove without asking")

    add_preset_parser(commands)
    return parser


def add_preset_parser(commands) -> None:
    preset = commands.add_parser(
        "preset", help="chat presets: a system prompt, sampling, thinking and a model, by name"
    )
    actions = preset.add_subparsers(dest="preset_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="the built-in presets and yours")
    show = actions.add_parser("show", help="a preset's settings, as its file holds them")
    show.add_argument("name")
    imported = actions.add_parser("import", help="a preset from an Ollama Modelfile (its SYSTEM, PARAMETERs and FROM)")
    imported.add_argument("modelfile", metavar="MODELFILE")
    imported.add_argument(
        "--name", default=None, help="the preset's name (default: the Modelfile's folder, or the file's own name)"
    )
    imported.add_argument("--force", action="store_true", help="replace a preset of that name")
    rm = actions.add_parser("rm", help="remove one of your presets")
    rm.add_argument("name")


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    multiprocessing.freeze_support()  # the llama.cpp worker process, in the desktop bundle
    parser = build_parser()
    args = parser.parse_args(argv)
    start_worker_early(args)
    handler = command_handler(args)
    if args.command is None:
        args = parser.parse_args(["chat"])
    remember_gguf_opened_by_path(args)
    code = run_command(handler, args)
    leave_now_if_compiling(code)
    return code


def command_handler(args: argparse.Namespace):
    """The function that runs the subcommand: chatapp.commands's, or chatapp.preset_commands's for presets."""
    if args.command == "preset":
        from chatapp.preset_commands import command_preset

        return command_preset
    if args.command == "export" and args.preset:
        from chatapp.preset_commands import command_export_with_preset

        return command_export_with_preset
    from chatapp import commands

    handler = getattr(commands, f"command_{args.command or 'chat'}")
    if args.command == "run" and args.preset:
        return with_run_preset(handler)
    return handler


def with_run_preset(handler):
    def run(args: argparse.Namespace) -> int:
        from chatapp.preset_commands import apply_to_run_args

        apply_to_run_args(args)  # inside run_command: a missing or broken preset is a one-line error
        return handler(args)

    return run


def remember_gguf_opened_by_path(args: argparse.Namespace) -> None:
    """A GGUF file named by path is listed by `chatapp models` and the model picker from then on."""
    spec = getattr(args, "model", None)
    if args.command not in ("run", "chat", "serve", "bench", "eval") or getattr(args, "endpoint", None):
        return
    if isinstance(spec, str) and spec.lower().endswith(".gguf"):
        from chatapp.models.discovery import remember_path

        remember_path(spec)


def start_worker_early(args: argparse.Namespace) -> None:
    """A GGUF file named by path: start its llama.cpp worker process now, so that it imports
    llama.cpp while this process imports the rest of chatapp and checks the file (quant.worker_start)."""
    spec = getattr(args, "model", None)
    if (
        args.command not in ("run", "chat", "serve", "bench")
        or not isinstance(spec, str)
        or not spec.lower().endswith(".gguf")
        or getattr(args, "backend", "auto") == "torch"
        or getattr(args, "endpoint", None)
        or getattr(args, "in_process", False)
        or (args.command == "serve" and args.parallel != 1)  # parallel slots run in the server's process
        or (args.command == "bench" and args.parallel is not None)  # ... and in the bench's
        or (args.context is not None and args.context < 16)  # open_backend refuses it
    ):
        return
    from pathlib import Path

    if not Path(spec).expanduser().is_file():
        return
    from chatapp.models.opening import Threads, llama_options
    from quant.llama_log import default_log_dir
    from quant.worker_start import start_spare

    threads = Threads(args.threads, args.threads_batch)
    try:
        threads.validate()
    except ValueError:
        return  # the command says so
    # The TUI may take its threads from the settings file and another model: start the worker, load nothing.
    path = None if args.command == "chat" else str(Path(spec).expanduser())
    try:
        start_spare(str(default_log_dir()), path, llama_options(args.context, threads))
    except Exception:  # noqa: BLE001 - only a head start: the backend starts a worker itself and says what failed
        pass


def run_command(handler, args: argparse.Namespace) -> int:
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        if interrupt_seen():  # a Ctrl+C that a C extension turned into its own error (chatapp/launch.py)
            sys.stderr.write("\ninterrupted\n")
            return EXIT_INTERRUPTED
        message = one_line(error)
        sys.stderr.write(f"chatapp: error: {message}\n")
        return EXIT_ERROR
    except Exception as error:  # a bug: keep the traceback in the log, not on the screen
        log_path = write_crash_log()
        sys.stderr.write(f"chatapp: internal error: {type(error).__name__}: {error} (details in {log_path})\n")
        return EXIT_ERROR


def leave_now_if_compiling(code: int) -> None:
    """A torch.compile still under way in the background would hold the exit for up to tens of
    seconds, and torch aborts a process that exits normally mid-compile: leave at once instead.
    By now every file chatapp writes is closed or committed (SQLite commits each write)."""
    compiled_step = sys.modules.get("model.inference.compiled_step")  # loaded only where a compile can run
    if compiled_step is not None and compiled_step.compile_under_way():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def write_crash_log() -> str:
    import traceback

    from chatapp.paths import log_dir

    try:
        log_dir().mkdir(parents=True, exist_ok=True)
        path = log_dir() / "crash.log"
        with open(path, "a", encoding="utf-8") as f:
            f.write(traceback.format_exc() + "\n")
        return str(path)
    except OSError:
        return "nowhere: the log folder is not writable"
