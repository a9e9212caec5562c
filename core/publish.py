"""Publishing to the Hugging Face Hub: one repo (private unless the job says otherwise), one commit.

`plan_hub_commit` lists what goes up (the LoRA, our model card as README.md, the training config with
secrets removed, validation images, checkpoints when asked); `publish_to_hub` creates or reuses the repo and
makes the commit, retrying 5xx answers and dropped connections with backoff. Every failure becomes a typed
error that carries the Hub's own message and never the token; nothing is reported as published unless the
commit succeeded.

huggingface_hub is imported inside the functions: it reads HF_HUB_DISABLE_XET, HF_HUB_DISABLE_TELEMETRY and
HF_HUB_OFFLINE once, at import, so a process must set them first. The endpoint is read from HF_ENDPOINT at
call time and passed explicitly to every call.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import HubAuthError, HubConflict, HubNotFound, HubQuotaError, JobError, PublishError
from core.events import EventSink, JobWarning, LogLine, ignore_event
from core.model_card import CardFacts, render_model_card
from core.secrets import mask_secret_values, redact, scrub_file
from core.spec import HubSpec
from core.storage import upload_outputs  # the other place outputs are published; re-exported here

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, HfApi

DEFAULT_ENDPOINT = "https://huggingface.co"
LORA_FILE = "pytorch_lora_weights.safetensors"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm"}
# Status codes worth another try: the Hub or its storage is busy or briefly down.
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
QUOTA_STATUS = {402, 413, 507}
QUOTA_WORDS = ("quota", "storage limit", "exceeded", "payment required", "upgrade your plan")


@dataclass
class HubResult:
    repo_id: str
    url: str
    commit: str
    private: bool
    files: dict[str, str]
    """relative path -> resolve URL pinned to the commit."""

    def to_dict(self) -> dict:
        return asdict(self)


def hub_endpoint(env: Mapping[str, str] | None = None) -> str:
    """The Hub to talk to: HF_ENDPOINT (a mirror, or the local test server), else huggingface.co."""
    env = os.environ if env is None else env
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def plan_hub_commit(
    output_dir: Path,
    *,
    facts: CardFacts,
    include_checkpoints: bool,
    extra_files: dict[str, Path] | None = None,
    secrets: Sequence[str | None] = (),
) -> list[CommitOperationAdd]:
    """The operations of the one commit, for SimpleTuner's output folder of a LoRA run.

    Goes up: every top-level *.safetensors (the LoRA), README.md (our card, replacing SimpleTuner's),
    simpletuner_config.json and any JSON extra file with secret keys removed, validation_images/, checkpoint-N/
    when `include_checkpoints`, and `extra_files` (repo path -> local file). Text files are scrubbed of
    `secrets` and of anything that looks like a token.
    """
    from huggingface_hub import CommitOperationAdd

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise PublishError(f"output folder {output_dir} does not exist", field="output_dir")
    weights = sorted(output_dir.glob("*.safetensors"))
    if not weights:
        raise PublishError(f"no LoRA weights in {output_dir}: {LORA_FILE} is missing", field="output_dir")

    files: dict[str, Path] = {path.name: path for path in weights}
    if (output_dir / "simpletuner_config.json").is_file():
        files["simpletuner_config.json"] = output_dir / "simpletuner_config.json"
    files.update(_tree(output_dir, "validation_images", lambda p: p.suffix.lower() in IMAGE_SUFFIXES))
    if include_checkpoints:
        for checkpoint in sorted(output_dir.glob("checkpoint-*")):
            files.update(_tree(output_dir, checkpoint.name, lambda p: True))
    for rel, path in (extra_files or {}).items():
        clean = _repo_path(rel)
        if not Path(path).is_file():
            raise PublishError(f"extra file {path} for '{rel}' does not exist", field="extra_files")
        files[clean] = Path(path)
    files.pop("README.md", None)  # our card, below, replaces SimpleTuner's and any other

    known = [s for s in secrets if s]
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=render_model_card(facts).encode())]
    for rel, path in files.items():
        scrubbed = scrub_file(path, known)
        operations.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=scrubbed if scrubbed is not None
                                             else str(path)))
    return operations


def _tree(root: Path, folder: str, keep: Callable[[Path], bool]) -> dict[str, Path]:
    base = root / folder
    if not base.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file() and keep(p)}


def _repo_path(rel: str) -> str:
    parts = [part for part in rel.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts or parts[0] == ".git":
        raise PublishError(f"'{rel}' is not a path inside a repo", field="extra_files")
    return "/".join(parts)


def publish_to_hub(
    output_dir: Path,
    *,
    hub: HubSpec,
    token: str | None,
    facts: CardFacts,
    on_event: EventSink = ignore_event,
    extra_files: dict[str, Path] | None = None,
    retries: int = 4,
    backoff_s: float = 2.0,
) -> HubResult:
    """Create (or reuse) `hub.repo_id` and push the run in one commit. `token` is the job's hub.token or
    HF_TOKEN, resolved by the caller. Raises HubAuthError, HubNotFound, HubConflict, HubQuotaError or
    PublishError; returns only after the commit succeeded."""
    if not token:
        raise HubAuthError("no Hugging Face token: set hub.token in the job or HF_TOKEN in the environment "
                           "(a token with the write role)", field="hub.token")
    endpoint = hub_endpoint()
    secrets = [token]
    operations = plan_hub_commit(output_dir, facts=facts, include_checkpoints=hub.include_checkpoints,
                                 extra_files=extra_files, secrets=secrets)
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise PublishError("HF_HUB_OFFLINE is set in this process: unset it to publish to the Hub", field="hub")
    api = HfApi(endpoint=endpoint, token=token)
    repo_id = hub.repo_id
    visibility = "private" if hub.private else "public"
    _warn_missing_widgets(facts, operations, on_event)
    # The pipeline reports the stage itself (started/completed/failed); these lines say what happens inside it.
    on_event(LogLine(f"pushing {len(operations)} files ({_size(operations)}) to {repo_id} ({visibility})"))

    def retried[T](what: str, call: Callable[[], T]) -> T:
        return _with_retries(call, what=what, repo_id=repo_id, endpoint=endpoint, retries=retries,
                             backoff_s=backoff_s, on_event=on_event, secrets=secrets)

    private, reused = retried("creating the repo", lambda: _ensure_repo(api, hub))
    if reused:
        on_event(LogLine(f"{repo_id} already exists ({'private' if private else 'public'}): reusing it"))
    if private != hub.private:
        on_event(JobWarning(f"{repo_id} is {'private' if private else 'public'}, not {visibility} as asked: "
                            "its visibility was left as it is", field="hub.private"))
    attempt = {"n": 0}

    def commit():
        attempt["n"] += 1
        # A retried commit gets fresh operations: huggingface_hub marks them as it uploads them.
        ops = operations if attempt["n"] == 1 else plan_hub_commit(
            output_dir, facts=facts, include_checkpoints=hub.include_checkpoints, extra_files=extra_files,
            secrets=secrets)
        return api.create_commit(repo_id=repo_id, repo_type="model", operations=ops,
                                 commit_message="Upload LoRA trained with SimpleTuner",
                                 commit_description=_commit_description(facts))

    info = retried("committing the files", commit)
    from huggingface_hub import hf_hub_url

    oid = info.oid
    files = {op.path_in_repo: hf_hub_url(repo_id, op.path_in_repo, revision=oid, endpoint=endpoint)
             for op in operations}
    result = HubResult(repo_id=repo_id, url=f"{endpoint}/{repo_id}", commit=oid, private=private, files=files)
    on_event(LogLine(f"published {len(files)} files to {result.url} ({oid[:8]})"))
    return result


def _ensure_repo(api: HfApi, hub: HubSpec) -> tuple[bool, bool]:
    """Create the repo; on 409 reuse it. (private, reused). Refuses to put a private job into a public repo."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(hub.repo_id, repo_type="model", private=hub.private, exist_ok=False)
        return hub.private, False
    except HfHubHTTPError as exc:
        if exc.response is None or exc.response.status_code != 409:
            raise
    private = bool(api.repo_info(hub.repo_id, repo_type="model").private)
    if hub.private and not private:
        raise HubConflict(f"{hub.repo_id} already exists and is public, but this job asks for a private repo: "
                          "make it private on the Hub or set hub.private to false", field="hub.private")
    return private, True


def _with_retries[T](call: Callable[[], T], *, what: str, repo_id: str, endpoint: str, retries: int,
                     backoff_s: float, on_event: EventSink, secrets: list[str]) -> T:
    for attempt in range(retries + 1):
        try:
            return call()
        except JobError:
            raise
        except Exception as exc:  # every client failure is classified here, then re-raised typed
            status, transient = _classify(exc)
            if transient and attempt < retries:
                wait = backoff_s * 2**attempt
                said = f"answered {status}" if status else "gave no usable answer"
                on_event(LogLine(f"the Hub {said} while {what}; retrying in {wait:.1f}s "
                                 f"(attempt {attempt + 2} of {retries + 1})", severity="warning"))
                time.sleep(wait)
                continue
            raise _typed_error(exc, status=status, what=what, repo_id=repo_id, endpoint=endpoint,
                               attempts=attempt + 1, secrets=secrets) from None
    raise AssertionError("unreachable")


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _classify(exc: Exception) -> tuple[int | None, bool]:
    """(HTTP status or None, worth retrying) for the deepest HTTP error behind `exc`."""
    import httpx2  # huggingface_hub 2.4's HTTP client
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    for cause in _causes(exc):
        if isinstance(cause, OfflineModeIsEnabled):
            return None, False
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = cause.response.status_code
            return status, status in TRANSIENT_STATUS
        if isinstance(cause, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return None, True
        if isinstance(cause, json.JSONDecodeError):
            return None, True  # an HTML error page from a proxy in front of the Hub, read as JSON
    return None, False


def _server_message(exc: Exception) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    for cause in _causes(exc):
        if isinstance(cause, HfHubHTTPError):
            if cause.server_message:
                return cause.server_message.strip()
            return str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return str(exc).strip()


def _typed_error(exc: Exception, *, status: int | None, what: str, repo_id: str, endpoint: str, attempts: int,
                 secrets: list[str]) -> PublishError:
    from huggingface_hub.errors import OfflineModeIsEnabled

    def clean(text: str) -> str:
        return mask_secret_values(redact(text, secrets))

    hub_says = clean(_server_message(exc)) or "no message"
    namespace = repo_id.split("/")[0]
    if any(isinstance(c, OfflineModeIsEnabled) for c in _causes(exc)):
        return PublishError("HF_HUB_OFFLINE is set in this process: unset it to publish to the Hub", field="hub")
    if status == 401:
        return HubAuthError(f"the Hub rejected the token while {what} (401: {hub_says}): hub.token or HF_TOKEN "
                            "must be a valid Hugging Face token with the write role", field="hub.token")
    if status in QUOTA_STATUS or (status in (400, 403) and any(w in hub_says.lower() for w in QUOTA_WORDS)):
        return HubQuotaError(f"the Hub refused the upload for lack of quota while {what} ({status}: {hub_says})",
                             field="hub.repo_id")
    if status == 403:
        return HubAuthError(f"the token may not write to {repo_id} while {what} (403: {hub_says}): it needs the "
                            f"write role and access to the '{namespace}' namespace", field="hub.token")
    if status == 404:
        return HubNotFound(f"{repo_id} not found while {what} (404: {hub_says})", field="hub.repo_id")
    if status == 409:
        return HubConflict(f"conflict on {repo_id} while {what} (409: {hub_says})", field="hub.repo_id")
    if status is not None and status in TRANSIENT_STATUS:
        return PublishError(f"the Hub kept failing while {what}: {status}: {hub_says} ({attempts} attempts)",
                            field="hub")
    if status is not None:
        return PublishError(f"the Hub answered {status} while {what}: {hub_says}", field="hub")
    if _classify(exc)[1]:
        return PublishError(f"cannot reach the Hub at {endpoint} while {what} ({attempts} attempts): "
                            f"{clean(type(exc).__name__ + ': ' + str(exc))}", field="hub")
    return PublishError(f"{what} failed: {clean(type(exc).__name__ + ': ' + str(exc))}", field="hub")


def _warn_missing_widgets(facts: CardFacts, operations: list[Any], on_event: EventSink) -> None:
    planned = {op.path_in_repo for op in operations}
    for path, _prompt in facts.validation:
        if path not in planned:
            on_event(JobWarning(f"the card shows {path}, which is not in the upload", field="validation"))


def _commit_description(facts: CardFacts) -> str:
    parts = [f"base model: {facts.base_model}", f"family: {facts.model_family}"]
    if facts.steps is not None:
        parts.append(f"steps: {facts.steps}")
    if facts.final_loss is not None:
        parts.append(f"final loss: {facts.final_loss:.4f}")
    return ", ".join(parts)


def _size(operations: list[Any]) -> str:
    total = sum(op.upload_info.size for op in operations)
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GB"


__all__ = ["HubResult", "hub_endpoint", "plan_hub_commit", "publish_to_hub", "upload_outputs"]
