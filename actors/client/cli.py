"""model-router: the operator's command line (serve, validate, route, models, switch, feed).

Every subcommand has ``--help``. Global options (before or after the subcommand):
``--url`` (env ``REMOTE_INFERENCE_URL``), ``--api-key`` (``MODEL_ROUTER_API_KEY``),
``--admin-key`` (``MODEL_ROUTER_ADMIN_KEY`` or the file in ``MODEL_ROUTER_ADMIN_KEY_FILE``),
``--timeout`` (``REMOTE_INFERENCE_TIMEOUT``), ``--json`` (machine-readable output).
Exit codes: 0 success; 1 the command failed (invalid config, API error, a switch that
did not complete, service unreachable); 2 usage error; 130 interrupted (Ctrl-C), except
``tail-switches``, for which Ctrl-C is the normal way to stop (exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from actors.client.errors import ApiError, ModelRouterError
from actors.client.results import Operation, SwitchEvent
from actors.client.settings import DEFAULT_URL, RetryPolicy
from actors.client.sync_client import RemoteInferenceClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
WAITED_STRATEGIES = frozenset({"immediate", "gradual", "canary"})


@attrs.frozen
class Output:
    """Where and how a command writes: human lines, or one JSON document (or one per event)."""

    json: bool
    out: TextIO
    err: TextIO

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def data(self, value: Any) -> None:
        print(json.dumps(_plain(value), sort_keys=True), file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def _plain(value: Any) -> Any:
    """attrs results (and tuples of them) as JSON-able data."""
    if attrs.has(type(value)):
        return {k: _plain(v) for k, v in attrs.asdict(value, recurse=False).items() if k != "raw"}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Exception):
        return str(value)
    return value


# ------------------------------------------------------------------ validate / route ----


def cmd_validate(args: argparse.Namespace, out: Output) -> int:
    from actors.core.route_diff import route_changes
    from actors.core.rules import compile_snapshot

    report: dict[str, Any] = {"config": str(args.config)}
    config, problems, warnings = _load_config(Path(args.config), args.models)
    report.update(valid=config is not None, errors=problems, warnings=warnings)
    old_config = None
    changes: tuple[Any, ...] = ()
    if config is not None:
        report.update(config_hash=config.config_hash, rules=len(config.rules),
                      default_model=config.settings.default_model)
    if args.against is not None:
        old_config, old_problems, _ = _load_config(Path(args.against), args.models)
        if old_config is None:
            report["against_errors"] = old_problems
    if config is not None and old_config is not None:
        changes = route_changes(compile_snapshot(old_config), compile_snapshot(config))
        report["against"] = str(args.against)
        report["changes"] = [attrs.asdict(c) for c in changes]
    ok = config is not None and "against_errors" not in report
    if out.json:
        out.data(report)
        return EXIT_OK if ok else EXIT_FAILED
    if config is None:
        out.line(f"INVALID {args.config}: {len(problems)} problem(s)")
    else:
        out.line(f"OK {args.config}: {len(config.rules)} rule(s), hash {config.config_hash}, "
                 f"default model {config.settings.default_model}")
    for problem in problems:
        out.line(f"  error   {problem}")
    for warning in warnings:
        out.line(f"  warning {warning}")
    if "against_errors" in report:
        out.line(f"INVALID {args.against} (the --against config): {len(report['against_errors'])} problem(s)")
        for problem in report["against_errors"]:
            out.line(f"  error   {problem}")
    if "changes" in report:
        out.line(f"{len(changes)} route(s) change model against {args.against}" + (":" if changes else ""))
        for change in changes:
            out.line(f"  {change.describe()}")
    return EXIT_OK if ok else EXIT_FAILED


def _load_config(path: Path, models: str | None) -> tuple[Any, list[str], list[str]]:
    """(config or None, errors, warnings): the service's own parsing, models checked when the repository exists."""
    from actors.core.rules import ConfigError, parse_config
    from actors.storage.config_files import read_config_text
    from actors.storage.model_repo import list_repository

    try:
        text = read_config_text(path)
    except (OSError, UnicodeError, ValueError) as exc:
        return None, [f"cannot read {path}: {exc}"], []
    repository = _repository(path, text, models)
    known = frozenset(list_repository(repository)) if repository is not None and repository.is_dir() else None
    try:
        config = parse_config(text, known_models=known)
    except ConfigError as exc:
        return None, [f"{d['path']}: {d['message']}" for d in exc.details], []
    warnings = list(config.warnings)
    if known is None:
        warnings.append(f"model repository {repository} not found: model names not checked")
    return config, [], warnings


def _repository(path: Path, text: str, models: str | None) -> Path | None:
    """The repository the config names (``--models`` wins), read leniently so a broken file still gets checked."""
    import yaml

    if models:
        return Path(models).resolve()
    try:
        data = yaml.safe_load(text)
        relative = data["model_router"]["config"].get("model_repository", "models")
    except (yaml.YAMLError, TypeError, KeyError, AttributeError):
        return None
    return (path.resolve().parent / str(relative)).resolve() if isinstance(relative, str) else None


def cmd_route(args: argparse.Namespace, out: Output) -> int:
    if args.config is not None:
        from actors.core.rules import compile_snapshot

        config, problems, _ = _load_config(Path(args.config), None)
        if config is None:
            out.note(f"invalid config {args.config}:\n  " + "\n  ".join(problems))
            return EXIT_FAILED
        snapshot = compile_snapshot(config)
        selection = snapshot.select(args.asset_class, args.horizon_ms, args.symbol)
        result: dict[str, Any] = {
            "model": selection.model, "rule_index": selection.rule_index, "description": selection.description,
            "fallback": selection.fallback, "config_hash": selection.config_hash,
            "horizon_bucket": snapshot.bucket_label(snapshot.horizon_bucket(args.horizon_ms)), "source": "config",
        }
    else:
        with _client(args) as client:
            result = {**attrs.asdict(client.route(args.asset_class, args.horizon_ms, args.symbol)),
                      "source": client.settings.base_url}
    if out.json:
        out.data(result)
    else:
        rule = "default (no rule matched)" if result["rule_index"] is None else f"rules[{result['rule_index']}]"
        out.line(f"{result['model']}  via {rule} {result['description']!r}; horizon bucket {result['horizon_bucket']}"
                 f"; fallback {result['fallback'] or '-'}; config {result['config_hash']}")
    return EXIT_OK


# ----------------------------------------------------------------------- models ----


def cmd_models_build(args: argparse.Namespace, out: Output) -> int:
    from actors.build import demo_models

    return demo_models.main(["--out", str(args.out), *(["--force"] if args.force else [])])


def cmd_models_list(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as client:
        models = client.models()
    if out.json:
        out.data(models)
        return EXIT_OK
    for model in models:
        versions = ", ".join(f"{v.version}:{v.status}" + (f" {v.traffic_share:.0%}" if v.traffic_share else "")
                             + (f" breaker {v.breaker}" if v.breaker != "closed" else "") for v in model.versions)
        out.line(f"{model.name:<20} active {model.active_version or '-':<4} policy {model.policy or '-':<7} "
                 f"[{versions}]")
    return EXIT_OK


# --------------------------------------------------------------------- switches ----


def _progress_line(op: Operation) -> str:
    step = f" step {op.step + 1}/{len(op.steps)}" if op.strategy == "gradual" and op.steps else ""
    reason = f" ({op.reason})" if op.reason else ""
    return (f"{op.id} {op.model} {op.from_version or '-'} -> {op.to_version}: {op.state}{step}, "
            f"{op.weight_percent:g}% on {op.to_version}{reason}")


def _follow(client: RemoteInferenceClient, op: Operation, args: argparse.Namespace, out: Output) -> int:
    """Show progress until the operation ends; the exit code says whether it completed."""
    report: Callable[[Operation], None] = (lambda o: None) if out.json else (lambda o: out.line(_progress_line(o)))
    if args.no_wait or op.strategy not in WAITED_STRATEGIES:
        if out.json:
            out.data(op)
        else:
            report(op)
            if not op.is_terminal:
                out.line(f"not waiting: follow with `model-router tail-switches --model {op.model}`"
                         f" or GET /switches/{op.id}")
        return EXIT_OK if op.state != "failed" else EXIT_FAILED
    final = client.wait(op.id, poll_s=args.poll_s, timeout_s=args.wait_timeout_s, on_progress=report)
    if out.json:
        out.data(final)
    return EXIT_OK if final.succeeded else EXIT_FAILED


def cmd_switch(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as client:
        op = client.switch(args.model, args.version, args.strategy, steps=args.steps, interval_s=args.interval_s,
                           canary_weight=args.canary_weight, healthy_intervals=args.healthy_intervals,
                           split=args.split, max_transition_s=args.max_transition_s)
        return _follow(client, op, args, out)


def cmd_rollback(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as client:
        op = client.rollback(args.model, args.version)
        return _follow(client, op, args, out)


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as client:
        status = client.status()
    if out.json:
        out.data(status)
        return EXIT_OK
    ready = "ready" if status.ready else "NOT READY: " + "; ".join(status.not_ready_reasons)
    out.line(f"{status.service} {status.version} at {client.settings.base_url}: {status.status}, {ready}")
    out.line(f"  config {status.config_hash}, up {status.uptime_s:.0f} s, worker {status.worker}, pid {status.pid}")
    out.line(f"  models loaded: {', '.join(status.models_loaded) or '-'}")
    out.line(f"  running switches: {len(status.running_switches)}")
    for op in status.running_switches:
        out.line(f"    {_progress_line(op)}")
    return EXIT_OK


def _event_line(event: SwitchEvent) -> str:
    op = f" op {event.operation_id}" if event.operation_id else ""
    return (f"{event.timestamp:.3f} {event.symbol} {event.old_model} -> {event.new_model} "
            f"{event.reason}{op} ({event.latency_ms:.1f} ms)")


def cmd_tail_switches(args: argparse.Namespace, out: Output) -> int:
    """Print the switch feed live until Ctrl-C (or ``--count`` events)."""
    seen = 0
    with _client(args, FEED_RETRY) as client:
        try:
            with client.switches(symbol=args.symbol, asset_class=args.asset_class, model=args.model,
                                 since=args.since) as feed:
                out.note(f"following switch events on {client.settings.base_url} (Ctrl-C to stop)")
                for event in feed:
                    seen += 1  # counted first: Ctrl-C may land right after the line is out
                    if out.json:
                        out.data(event)
                    else:
                        out.line(_event_line(event))
                    if args.count is not None and seen >= args.count:
                        break
        except KeyboardInterrupt:
            out.note(f"stopped after {seen} event(s)")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import app

    return app.main(args.serve_args)


def cmd_keys(args: argparse.Namespace, out: Output) -> int:
    """API keys in an access file: create (prints the token once), list, revoke."""
    from actors.storage.access_file import keys_main

    return keys_main(args.keys_args)


# ------------------------------------------------------------------------ parser ----


# tail-switches outlives service restarts: reconnect for about a minute before giving up.
FEED_RETRY = RetryPolicy(attempts=40, base_delay_s=0.1, max_delay_s=2.0)


def _client(args: argparse.Namespace, retry: RetryPolicy | None = None) -> RemoteInferenceClient:
    return RemoteInferenceClient(args.url, timeout=args.timeout, api_key=args.api_key, admin_key=args.admin_key,
                                 remote=True, retry=retry)


def _add_globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Global options; on subcommands they default to SUPPRESS so they do not undo the top level's values."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument("--url", default=default(None),
                       help=f"service base URL (env REMOTE_INFERENCE_URL, default {DEFAULT_URL})")
    group.add_argument("--api-key", default=default(None), help="API key, sent as a bearer token "
                       "(env MODEL_ROUTER_API_KEY)")
    group.add_argument("--admin-key", default=default(None), help="admin key for switch/rollback "
                       "(env MODEL_ROUTER_ADMIN_KEY or the file in MODEL_ROUTER_ADMIN_KEY_FILE)")
    group.add_argument("--timeout", type=float, default=default(None),
                       help="seconds per request (env REMOTE_INFERENCE_TIMEOUT, default 10)")
    group.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")


def _percent_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated percentages like 5,25,50,100, got {text!r}") \
            from None


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="return once started instead of following it")
    parser.add_argument("--poll-s", type=float, default=0.5, help="seconds between progress polls (default 0.5)")
    parser.add_argument("--wait-timeout-s", type=float, default=None, help="give up waiting after this long")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-router", description=__doc__.splitlines()[0],
                                     epilog="`model-router COMMAND --help` describes each command.")
    _add_globals(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace, Output], int] | None,
                parent: Any = commands) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        _add_globals(sub, top=False)
        if handler is not None:
            sub.set_defaults(handler=handler)
        return sub

    serve = commands.add_parser("serve", help="run the service (every option of `python app.py`; "
                                "`model-router serve --help` lists them)", add_help=False)
    serve.set_defaults(handler=cmd_serve)
    keys = commands.add_parser("keys", help="API keys in an access file: create, list, revoke "
                               "(`model-router keys --help` lists them)", add_help=False)
    keys.set_defaults(handler=cmd_keys)

    validate = command("validate", "check a rules file: errors and warnings; exit 0 valid, 1 invalid",
                       cmd_validate)
    validate.add_argument("config", help="the rules file to check")
    validate.add_argument("--against", metavar="OLD", help="also list the routes whose model changes from OLD")
    validate.add_argument("--models", help="model repository (default: the config's model_repository)")

    route = command("route", "which rule and model a request would get (no inference)", cmd_route)
    route.add_argument("asset_class")
    route.add_argument("horizon_ms", type=float)
    route.add_argument("symbol", nargs="?")
    route.add_argument("--config", help="route with this rules file locally instead of asking the service")

    models = command("models", "build the demo models, or list the service's models", None)
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    build = command("build", "build the demo TFLite models (deterministic)", cmd_models_build, model_commands)
    build.add_argument("--out", default="models", help="repository folder (default: models)")
    build.add_argument("--force", action="store_true", help="rewrite files even if unchanged")
    command("list", "the service's models: versions, state, traffic share, breaker", cmd_models_list,
            model_commands)

    switch = command("switch", "switch a model to a version; follows gradual/canary switches until done "
                     "(exit 0 completed, 1 rolled back, aborted or failed)", cmd_switch)
    switch.add_argument("model")
    switch.add_argument("version", help="a version number or 'latest'")
    switch.add_argument("--strategy", default="immediate", choices=["immediate", "gradual", "canary", "ab"])
    switch.add_argument("--steps", type=_percent_list, help="gradual: percentages, e.g. 5,25,50,100")
    switch.add_argument("--interval-s", type=float, help="gradual/canary: seconds per step or analysis interval")
    switch.add_argument("--canary-weight", type=float, help="canary: percent of traffic on the new version")
    switch.add_argument("--healthy-intervals", type=int, help="canary: healthy intervals before promotion")
    switch.add_argument("--split", type=float, help="ab: percent of traffic on the new version")
    switch.add_argument("--max-transition-s", type=float, help="bound on draining the old version")
    _wait_options(switch)

    rollback = command("rollback", "back to the previous (or --version) version, or roll back the running switch",
                       cmd_rollback)
    rollback.add_argument("model")
    rollback.add_argument("--version")
    _wait_options(rollback)

    command("status", "health, readiness, loaded models and running switches", cmd_status)

    tail = command("tail-switches", "print switch events live, one line each, until Ctrl-C", cmd_tail_switches)
    tail.add_argument("--symbol")
    tail.add_argument("--asset-class")
    tail.add_argument("--model", help="events where this model is on either side")
    tail.add_argument("--since", help="replay from this stream id first (service with Redis)")
    tail.add_argument("--count", type=int, help="stop after this many events")
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(arguments)
    if args.command == "serve":
        args.serve_args = extra
    elif args.command == "keys":
        args.keys_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    out = Output(bool(args.json), stdout or sys.stdout, stderr or sys.stderr)
    try:
        return int(args.handler(args, out))
    except ApiError as error:
        out.note(f"model-router: {error.status} {error.code}: {error.message}")
        if error.details:
            out.note(f"  details: {json.dumps(error.details, sort_keys=True)}")
        return EXIT_FAILED
    except (ModelRouterError, TimeoutError) as error:
        out.note(f"model-router: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        out.note("model-router: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
