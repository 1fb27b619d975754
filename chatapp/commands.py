"""What each `chatapp` subcommand does. Imports of torch and llama.cpp stay lazy."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from dataclasses import fields, replace

from chatapp.models.opening import OpenedModel, Threads, open_model, set_session_threads
from chatapp.models.registry import ModelNotFound, default_model, torch_available, torch_missing
from chatapp.models.resolve import resolve_model
from model.inference.backend import collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message


def sampling_from_args(args) -> SamplingParams:
    """The sampling options given on the command line (chatapp.cli stores each under its
    SamplingParams field, None when not given); SamplingParams's defaults for the rest."""
    given = {f.name: getattr(args, f.name) for f in fields(SamplingParams) if getattr(args, f.name, None) is not None}
    return SamplingParams(**given).validate()


def print_json(data) -> None:
    print(json.dumps(data, indent=2))


def print_piece(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class ThinkingPrinter:
    """A reasoning model's thinking as `chatapp run` prints it: dimmed before the answer on a terminal,
    else on stderr (so that stdout, piped, is the answer alone)."""

    DIM, RESET = "\x1b[2m", "\x1b[0m"

    def __init__(self) -> None:
        self.on_terminal = sys.stdout.isatty()
        self.open = False  # thinking was printed on stdout and the answer has not started

    def thinking(self, text: str) -> None:
        if self.on_terminal:
            sys.stdout.write(self.DIM + text + self.RESET)
            sys.stdout.flush()
            self.open = True
        else:
            sys.stderr.write(text)
            sys.stderr.flush()
            self.open = True

    def answer(self, text: str) -> None:
        if self.open:
            (sys.stdout if self.on_terminal else sys.stderr).write("\n\n" if self.on_terminal else "\n")
            self.open = False
        print_piece(text)


def command_run(args) -> int:
    params = sampling_from_args(args)
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    if not prompt.strip():
        raise ValueError("no prompt: give one as an argument or on stdin")
    compile = "off" if args.compile == "auto" else args.compile  # one reply ends before a compile would
    opened = open_model(
        args.model,
        args.backend,
        args.device,
        context=args.context,
        compile=compile,
        api_key=args.api_key,
        endpoint=args.endpoint,
        threads=threads_from_args(args),
    )
    backend = opened.backend
    if args.raw:
        events = backend.complete(prompt, params)
    else:
        messages = ([Message("system", args.system)] if args.system else []) + [Message("user", prompt.strip())]
        events = backend.chat(messages, params)
    try:
        printer = ThinkingPrinter()
        reply = collect_reply(
            events,
            on_text=None if args.json else printer.answer,
            on_thinking=None if args.json else printer.thinking,
        )
    except KeyboardInterrupt:
        backend.cancel()
        sys.stdout.write("\n")
        raise
    finished = reply.finished
    assert finished is not None, "a reply always ends with Finished"
    if not args.json:
        sys.stdout.write("\n")  # the reply's line ends before any note
        sys.stdout.flush()
    for notice in finished.notices:
        sys.stderr.write(f"note: {notice}\n")
    if args.json:
        print_json(
            {
                "model": opened.name,
                "backend": backend.name,
                "context_length": backend.context_length,
                "trained_context_length": backend.trained_context_length,
                "text": reply.text,
                "thinking": reply.thinking,
                **finished.__dict__,
            }
        )
    return 0


def threads_from_args(args, settings_threads: int = 0) -> Threads:
    """--threads and --threads-batch; without --threads, the settings file's threads (0: automatic)."""
    threads = args.threads if args.threads is not None else (settings_threads or None)
    return Threads(threads, args.threads_batch).validate()


def command_chat(args) -> int:
    from chatapp.settings import load_settings
    from chatapp.tui.app import run_app

    set_session_threads(threads_from_args(args, load_settings().threads))  # the models the TUI opens
    preset = None
    if args.preset:
        from chatapp.presets import find_preset

        preset = find_preset(args.preset)
        if args.model or args.endpoint:  # the command line's model wins over the preset's
            preset = replace(preset, model="")
    return run_app(
        args.model, args.backend, args.device, args.context, args.endpoint, args.api_key, args.compile, preset
    )


def command_serve(args) -> int:
    from chatapp.serving.api_key import api_key
    from chatapp.serving.server import ServerOptions, serve, split_host

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.queue < 0:
        raise ValueError(f"--queue must be >= 0, got {args.queue}")
    for name in args.allow_host:
        if split_host(name) is None:
            raise ValueError(f"--allow-host takes a host name or NAME:PORT, got {name!r}")
    opened = open_for_serving(args)
    backend = opened.backend
    try:
        options = ServerOptions(
            model_id=opened.name,
            api_key=api_key(args.api_key),
            cors_origins=args.cors_origin,
            max_waiting=args.queue,
            allowed_hosts=args.allow_host,
            any_host=args.allow_any_host,
        )
        return serve(backend, options, args.host, args.port, log=lambda line: print(line, file=sys.stderr))
    finally:
        backend.close()


def open_for_serving(args) -> OpenedModel:
    """The model on parallel slots (chatapp.serving.parallel), else as every command opens it."""
    from chatapp.serving.parallel import open_parallel

    threads = threads_from_args(args)
    on_slots = open_parallel(
        args.model,
        resolve_model,
        args.backend,
        args.parallel,
        context=args.context,
        threads=(threads.decode, threads.batch),
        device=args.device,
        compile=args.compile,
    )
    if on_slots is not None:
        return OpenedModel(*on_slots)
    return open_model(
        args.model, args.backend, args.device, context=args.context, compile=args.compile, threads=threads
    )


def command_export(args) -> int:
    ref = resolve_model(args.model, runnable=False)  # --type and --format were checked by the parser
    if ref.kind != "folder":
        raise ValueError(f"{ref.path}: export needs a model folder, not a GGUF file")
    out = args.output or {"hf": f"{ref.name}-hf", "ollama": f"{ref.name}-ollama"}.get(
        args.format, f"{ref.name}-{args.type}.gguf"
    )
    check_export_target(ref.path, out, args.format, args.force)  # before an adapters folder is merged elsewhere
    with plain_model_folder(ref.path) as folder:
        if args.format == "hf":
            from quant.hf_export import export_hf

            out = export_hf(folder, out, force=args.force)
            print(f"{out}: a Hugging Face folder (GPT2LMHeadModel); AutoModelForCausalLM.from_pretrained({str(out)!r})")
            return 0
        if args.format == "ollama":
            return export_for_ollama(folder, ref.name, out, args)
        print("\n".join(export_gguf(folder, out, args.type, args.force).lines()))
    return 0


def check_export_target(source, out, format: str, force: bool) -> None:
    """One rule for every format (quant/export_target.py): never into the model folder, never
    over what an earlier export did not write unless --force."""
    from quant.export_target import check_target, is_chatapp_gguf
    from quant.hf_export import is_hf_export
    from quant.ollama_export import is_ollama_export

    earlier_export = {"hf": is_hf_export, "ollama": is_ollama_export}.get(format, is_chatapp_gguf)
    check_target(source, out, force, earlier_export)


def export_gguf(folder, out, kind: str, force: bool = False):
    from chatapp.paths import log_dir
    from quant.gguf_export import StageProgress, export_model

    bars = StageProgress(sys.stderr)
    try:
        return export_model(folder, out, kind, progress=bars, log_dir=log_dir(), force=force)
    finally:
        bars.close()


def export_for_ollama(folder, name: str, out, args) -> int:
    """OUT/NAME-TYPE.gguf and OUT/Modelfile, and the command that makes it an Ollama model."""
    from pathlib import Path

    from quant.ollama_export import write_modelfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gguf_name = f"{name}-{args.type}.gguf"
    print("\n".join(export_gguf(folder, out / gguf_name, args.type, args.force).lines()))
    modelfile = write_modelfile(folder, out, gguf_name)
    print(f"{modelfile}: then `ollama create {name} -f {modelfile}` and `ollama run {name}`")
    return 0


@contextlib.contextmanager
def plain_model_folder(folder):
    """The folder itself, or for an adapters folder its base with the adapters merged, in a temporary folder."""
    from model.network.model_folder import ADAPTERS_KEY, read_config

    if ADAPTERS_KEY not in read_config(folder):
        yield folder
        return
    require_torch("exporting an adapters folder (its adapters are merged into the base)")
    from model.network.model_folder import save_merged

    with tempfile.TemporaryDirectory(prefix="chatapp-merged-") as merged:
        save_merged(folder, merged)
        yield merged


def require_torch(what: str) -> None:
    """Training, fine-tuning and model folders need PyTorch; the light install and the desktop bundle
    have none: one line that says what to install."""
    if not torch_available():
        raise ValueError(torch_missing(what))


def refuse_to_overwrite(out: str, resume: bool, force: bool) -> None:
    """--out must be new or empty unless --resume (continue it) or --force (overwrite it). Checked by
    the first process only: under torchrun it may have begun writing before the others look."""
    import os
    from pathlib import Path

    folder = Path(out).expanduser()
    if resume or force or os.environ.get("RANK", "0") != "0" or not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if any(folder.iterdir()):
        raise ValueError(f"{out}: is not empty (a model folder?); --resume continues its run, --force overwrites it")


def command_train(args) -> int:
    require_torch("`chatapp train`")
    refuse_to_overwrite(args.out, args.resume, args.force)
    from chatapp.training_flags import TRAIN_OPTIONS, option_values
    from model.training.train import TrainOptions, train

    train(
        TrainOptions(**option_values(args, TRAIN_OPTIONS), device=args.device),
        log=lambda line: print(line, file=sys.stderr),
    )
    return 0


def command_finetune(args) -> int:
    require_torch("`chatapp finetune`")
    from chatapp.training_flags import FINETUNE_OPTIONS, option_values
    from model.training.finetune import FinetuneOptions, finetune

    ref = resolve_model(args.base)
    if ref.kind != "folder":
        raise ValueError(f"{ref.path}: fine-tuning needs a model folder, not a GGUF file")
    refuse_to_overwrite(args.out, args.resume, args.force)
    options = FinetuneOptions(base=str(ref.path), **option_values(args, FINETUNE_OPTIONS), device=args.device)
    finetune(options, log=lambda line: print(line, file=sys.stderr))
    return 0


def validation_loss(ref, data: str | None, device: str) -> dict:
    """Held-out nats/token, nats/char and perplexity: a model folder on torch, a GGUF file on llama.cpp."""
    from model.training.dataset import load_split

    validation = load_split(data).validation
    if ref.kind == "gguf":
        from quant.gguf_validation_loss import evaluate_gguf

        return evaluate_gguf(ref.path, validation)
    from model.network.device import resolve_device
    from model.network.model_folder import load_model
    from model.training.dataset import encode_works
    from model.training.validation_loss import evaluate_model

    device = resolve_device(device)
    model, tokenizer, _ = load_model(ref.path, device=device)
    stream = encode_works(validation, tokenizer)
    return evaluate_model(model, stream.ids, stream.n_chars, device)


def command_eval(args) -> int:
    ref = resolve_model(args.model)
    if ref.kind == "folder":
        require_torch(f"evaluating the model folder {ref.path}")
    result = {"model": ref.name, **validation_loss(ref, args.data, args.device)}
    if args.json:
        print_json(result)
    else:
        print(
            f"{ref.name}: {result['nats_per_token']:.4f} nats/token, {result['nats_per_char']:.4f} nats/char, "
            f"perplexity {result['perplexity']:.2f} ({result['tokens']:,} tokens, {result['chars']:,} characters)"
        )
    return 0


def command_bench(args) -> int:
    from chatapp.bench import format_bench, run_bench

    if args.parallel is not None:  # a GGUF file on N slots for each N, N replies at once
        from chatapp.bench import format_parallel_bench, parse_parallel_counts, run_parallel_bench, slot_opener

        counts = parse_parallel_counts(args.parallel)
        threads = threads_from_args(args)
        opener = slot_opener(
            args.model, args.backend, args.context, (threads.decode, threads.batch), args.device, args.compile
        )
        result = run_parallel_bench(opener, counts, args.prompt_tokens, args.gen_tokens, args.runs)
        print_json(result) if args.json else print(format_parallel_bench(result))
        return 0
    backend = open_model(
        args.model,
        args.backend,
        args.device,
        in_process=args.in_process,
        context=args.context,
        compile=args.compile,
        threads=threads_from_args(args),
    ).backend
    where = "" if backend.name != "llama.cpp" else ("in process" if args.in_process else "worker process")
    result = run_bench(backend, args.prompt_tokens, args.gen_tokens, args.runs, not args.no_compare, where)
    print_json(result) if args.json else print(format_bench(result))
    return 0


def command_models(args) -> int:
    from chatapp.models.discovery import discover_models
    from chatapp.models.listing import model_lines, model_records

    models = discover_models()
    try:
        default_path = default_model().path  # what `chatapp` opens with no model given
    except ModelNotFound:
        default_path = None
    if args.json:
        print_json(model_records(models, default_path))
    else:
        print("\n".join(model_lines(models, default_path)))
    return 0


def command_pull(args) -> int:
    from chatapp.models.hub_plan import PullError
    from chatapp.models.pull import pull, pulled_bytes_kept
    from chatapp.models.pull_printer import PullPrinter

    printer = PullPrinter.for_stdout(json_lines=args.json)
    try:
        pull(args.spec, on_event=printer)
    except KeyboardInterrupt:
        printer.interrupted(args.spec, pulled_bytes_kept(args.spec))
        raise
    except PullError as error:
        printer.failed(error)
        raise
    finally:
        printer.close()
    return 0


def command_rm(args) -> int:
    from chatapp.models.hub_cache import find_removal, remove_model
    from chatapp.models.listing import human_size

    removal = find_removal(args.name)
    what = f"{removal.name} ({human_size(removal.size_bytes)}, {removal.files[0]})"
    if not args.yes:
        if not sys.stdin.isatty():
            raise ValueError(f"chatapp rm asks before it removes {removal.name}: --yes removes it without asking")
        if input(f"remove {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not removed")
            return 1
    freed = remove_model(removal)
    print(f"removed {removal.name} ({human_size(freed)} freed)")
    return 0
