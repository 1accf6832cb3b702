"""`voicefallback init`: the commented starter models.toml, written without overwriting."""

from __future__ import annotations

import os
from pathlib import Path

from voicefallback.environment import CONFIG_ENV, user_config_dir
from voicefallback.errors import InputError

STARTER_TOML = """\
# voicefallback registry: the models a voice session may start on, in order of preference.
#
#   voicefallback probe      call every model now and record its health
#   voicefallback health     show the latest health, without calling anything
#   voicefallback start --simulation-id sim-1 --primary openai:gpt-4o-mini
#
# It starts in stub mode: deterministic fake calls, no keys, no network. When you are ready,
# set mode = "live" below (or VOICEFALLBACK_MODE=live) and export the API key variables.

[settings]
mode = "stub"            # "stub": deterministic fake calls; "live": real provider calls
timeout_s = 10           # hard limit for one probe or one opening call (fractions allowed)
ttft_budget_ms = 1500    # time to first token above this is too slow for voice
stale_after_s = 300      # a snapshot older than this is probed again before it is trusted
fail_after = 1           # consecutive failures that make a model unhealthy
recover_after = 2        # consecutive successes needed to be healthy again after failing
history_days = 30        # probe history older than this is pruned

# Providers: `type` is the SDK to call it with; keys come only from environment variables.
[providers.openai]
type = "openai"                  # official openai SDK
api_key_env = "OPENAI_API_KEY"

[providers.anthropic]
type = "anthropic"               # official anthropic SDK
api_key_env = "ANTHROPIC_API_KEY"

# Any OpenAI-compatible endpoint works too; uncomment to add one:
# [providers.groq]
# type = "openai"
# base_url = "https://api.groq.com/openai/v1"
# api_key_env = "GROQ_API_KEY"

# Models: id is "<provider>:<model name sent to the API>". Any [settings] value except mode
# can be set per model. `stub` says what stub mode answers: latency_ms, ttft_ms, or an
# error kind (timeout, connection, rate_limited, overloaded, server_error, auth, not_found,
# bad_request, bad_response, missing_key); live mode ignores it.

[[models]]
id = "openai:gpt-4o-mini"
stub = { latency_ms = 180 }

[[models]]
id = "anthropic:claude-3-5-haiku-latest"
ttft_budget_ms = 1200
stub = { latency_ms = 210, ttft_ms = 150 }

[[models]]
id = "openai:gpt-4o"
# In stub mode this one pretends to be down, so you can watch a session fall back:
#   voicefallback start --simulation-id demo --primary openai:gpt-4o
stub = { error = "overloaded" }
"""


def write_starter(path: Path) -> Path:
    """Create `path` (and its directory) with the starter registry; never overwrite."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise InputError(
            f"{path}: already exists; not overwriting it (edit it, or pass --config NEW_PATH)"
        ) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(STARTER_TOML)
    return path


def starter_path(option: Path | None) -> Path:
    """Where `init` writes: --config, else VOICEFALLBACK_CONFIG, else the user config dir."""
    if option is not None:
        return option
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return user_config_dir() / "models.toml"
