"""`python -m app`: start the UI on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860).

Access: UI_PASSWORD (any user name) or UI_AUTH="user:pass,user2:pass2". Binding a public interface without either
logs a warning. Files are served only from the data folder (DATA_DIR) and Gradio's temp folder, which is put
inside it. Uploads are limited to UI_MAX_UPLOAD_MB (default 2048; 0: no limit): Gradio stops a bigger file while it
is being received, and the Dataset tab refuses an upload whose files together are bigger.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.errors import SetupError
from core.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 2048
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Off the network for analytics and telemetry; read by gradio and huggingface_hub at import.
QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
CSS = """
.field-error [data-testid="block-info"], .field-error .info-text { color: #c62828 !important; }
.mono textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.85em; }
.run-status { padding: 4px 0; }
.run-bar { height: 14px; border-radius: 7px; background: var(--neutral-200, #e5e7eb); overflow: hidden; }
.run-fill { height: 100%; background: var(--color-accent, #f97316); transition: width 0.5s; }
.run-status[data-status="failed"] .run-fill, .run-status[data-status="cancelled"] .run-fill { background: #9ca3af; }
.run-status[data-status="succeeded"] .run-fill { background: #16a34a; }
.run-line { margin-top: 6px; }
"""
logger = logging.getLogger("app")


def auth_from_env(env: Mapping[str, str]) -> Callable[[str, str], bool] | None:
    """The login check from UI_PASSWORD or UI_AUTH, or None when neither is set (no login)."""
    password = env.get("UI_PASSWORD") or ""
    pairs = env.get("UI_AUTH") or ""
    if password and pairs:
        raise SetupError("set UI_PASSWORD or UI_AUTH, not both", field="UI_AUTH")
    if password:
        return lambda user, given: hmac.compare_digest(given.encode(), password.encode())
    if not pairs.strip():
        return None
    users: dict[str, str] = {}
    for index, pair in enumerate(p.strip() for p in pairs.split(",")):
        user, sep, secret = pair.partition(":")
        if not sep or not user.strip() or not secret:
            raise SetupError(f"entry {index + 1} is not user:password (entries are separated by commas)",
                             field="UI_AUTH")
        users[user.strip()] = secret

    def check(user: str, given: str) -> bool:
        # Compared even for an unknown user, so timing does not tell which user names exist.
        matches = hmac.compare_digest(given.encode(), users.get(user, "").encode())
        return matches and user in users

    return check


def server_address(env: Mapping[str, str]) -> tuple[str, int]:
    host = env.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    raw = env.get("GRADIO_SERVER_PORT") or str(DEFAULT_PORT)
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise SetupError(f"must be a port number, got {raw!r}", field="GRADIO_SERVER_PORT")
    return host, int(raw)


def max_upload_bytes(env: Mapping[str, str]) -> int | None:
    """UI_MAX_UPLOAD_MB in bytes (default DEFAULT_MAX_UPLOAD_MB); None when set to 0 (no limit)."""
    raw = (env.get("UI_MAX_UPLOAD_MB") or "").strip() or str(DEFAULT_MAX_UPLOAD_MB)
    if not raw.isdigit():
        raise SetupError(f"must be a whole number of megabytes (0: no limit), got {raw!r}", field="UI_MAX_UPLOAD_MB")
    return int(raw) * 1024**2 or None


def launch_options(*, settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """Everything launch() gets: address, login, the one folder files are served from, the upload limit, theme
    and CSS."""
    import gradio as gr

    host, port = server_address(env)
    auth = auth_from_env(env)
    if auth is None and host not in LOCAL_HOSTS:
        logger.warning("the UI listens on %s without a password: anyone who reaches port %d can train and push "
                       "with this machine's HF_TOKEN. Set UI_PASSWORD (or UI_AUTH=user:pass,...)", host, port)
    settings.data_root.mkdir(parents=True, exist_ok=True)
    return {
        "server_name": host, "server_port": port, "auth": auth,
        "auth_message": "Enter the UI password (any user name)" if env.get("UI_PASSWORD") else None,
        "allowed_paths": [str(settings.data_root)], "theme": gr.themes.Soft(), "css": CSS,
        "footer_links": ["api", "gradio"], "show_error": False, "max_file_size": max_upload_bytes(env),
    }


def serve(*, settings: Settings, env: Mapping[str, str], prevent_thread_lock: bool = False,
          quiet: bool = False) -> tuple[Any, str]:
    """Build and launch the UI; returns (UI, local URL). With prevent_thread_lock it returns at once (tests)."""
    from app.ui import build_ui

    options = launch_options(settings=settings, env=env)
    ui = build_ui(settings=settings, max_upload_bytes=options["max_file_size"])
    _, url, _ = ui.blocks.launch(prevent_thread_lock=prevent_thread_lock, quiet=quiet, **options)
    return ui, url


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request Gradio makes to itself
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    settings = Settings.from_env()
    # Uploads land in Gradio's temp folder: keep it inside the data folder, with everything else the app writes.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(settings.data_root) / "gradio-tmp"))
    started = time.monotonic()
    try:
        ui, url = serve(settings=settings, env=os.environ, prevent_thread_lock=True)
    except SetupError as error:
        print(f"app: {error}", file=sys.stderr)
        return 2
    atexit.register(ui.registry.shutdown)  # a training never outlives the UI
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logger.info("UI ready at %s in %.1f s (data folder %s)", url, time.monotonic() - started, settings.data_root)
    if settings.storage is not None:  # which storage outlives the pod (docs/runpod-notes.md, Volumes)
        logger.info("%s", settings.storage.line())
    try:
        ui.blocks.block_thread()
    except (KeyboardInterrupt, SystemExit):
        logger.info("stopping")
    ui.registry.shutdown()
    ui.blocks.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
