"""Rule sets shared by the benches (no service imports, so any bench can use them)."""

from __future__ import annotations

from pathlib import Path

MODELS = ("tlob_tiny", "patchtst_small", "timesnet_base", "mamba_ts_small")


def synthetic_rules(count: int, variant: int) -> str:
    """``count`` distinct rules over many asset classes and horizon bands."""
    lines = []
    for i in range(count):
        lo = (i % 20) * 60_000
        lines.append(
            f'    - match: {{asset_class: "class_{i // 20}_{variant % 2}", horizon_ms: ">={lo} & <{lo + 60_000}"}}\n'
            f"      model: {MODELS[i % len(MODELS)]}\n"
            f"      priority: {i}\n"
        )
    return "".join(lines)


def config_text(repo: Path, rules: int, variant: int) -> str:
    body = synthetic_rules(rules, variant) if rules else (
        f'    - match: {{asset_class: "crypto", horizon_ms: "<{60_000 + variant}"}}\n'
        "      model: tlob_tiny\n"
    )
    return (
        "model_router:\n  rules:\n" + body +
        "  config:\n    default_model: timesnet_base\n"
        f'    model_repository: "{repo}"\n'
        "  reload:\n    debounce_ms: 100\n    backup_on_reload: false\n"
    )
