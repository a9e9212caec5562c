"""Publishing to the Hugging Face Hub: one repo (private unless the job says otherwise), one commit.

`plan_hub_commit` lists what goes up (the LoRA, our model card as README.md, the training config with
secrets removed, validation images, checkpoints when asked); `publish_to_hub` creates or reuses the repo and
makes the commit. The endpoint, the retries of passing failures and the typed errors (carrying the Hub's own
message, never the token) are core/adapters/hub.py's; nothing is reported as published unless the commit succeeded.
A cancel (or the job's deadline) is looked at between the files being prepared, before each Hub call and during
its retry waits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.adapters import (
    RETRY,
    CancelFlag,
    HubTarget,
    RetryPolicy,
    call_hub,
    is_offline,
    offline_error,
    repo_path,
    stop_error,
)
from core.errors import HubAuthError, PublishError
from core.events import EventSink, JobWarning, LogLine, ignore_event
from core.outputs import LORA_FILE, PIPELINE_DIR, SAMPLES_DIR, VALIDATION_SUFFIXES, checkpoints, expert_outputs
from core.publishing.card import CardFacts, render_model_card
from core.publishing.destinations import HubDestination, ensure_repo
from core.result import human_size
from core.secrets import scrub_file
from core.simpletuner import FULL, LYCORIS_CONFIG_FILE

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

COMMIT_MESSAGES = {"lora": "Upload LoRA trained with SimpleTuner", "lycoris": "Upload LyCORIS adapter trained "
                   "with SimpleTuner", "full": "Upload full fine-tune trained with SimpleTuner"}


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


def plan_hub_commit(
    output_dir: Path,
    *,
    facts: CardFacts,
    include_checkpoints: bool,
    extra_files: dict[str, Path] | None = None,
    secrets: Sequence[str | None] = (),
    cancel: CancelFlag | None = None,
) -> list[CommitOperationAdd]:
    """The operations of the one commit, for SimpleTuner's output folder of a run.

    Goes up: every top-level *.safetensors (the LoRA or LyCORIS adapter) and lycoris_config.json, or for a full
    fine-tune (facts.kind) its `pipeline/` folder as the repo's root; README.md (our card, replacing
    SimpleTuner's), simpletuner_config.json and any JSON extra file with secret keys removed,
    validation_images/, an edit run's before/after images (facts.pairs, pairs/), checkpoint-N/ when
    `include_checkpoints`, and `extra_files` (repo path -> local file).
    Text files are scrubbed of `secrets` and of anything that looks like a token.
    """
    from huggingface_hub import CommitOperationAdd

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise PublishError(f"output folder {output_dir} does not exist", field="output_dir")
    files = _weights(output_dir, kind=facts.kind)
    for name in ("simpletuner_config.json", LYCORIS_CONFIG_FILE):
        if (output_dir / name).is_file():
            files[name] = output_dir / name
    for run in expert_outputs(output_dir) or [output_dir]:  # each expert's run, or the one run
        files.update(_tree(output_dir, (run / SAMPLES_DIR).relative_to(output_dir).as_posix(),
                           lambda p: p.suffix.lower() in VALIDATION_SUFFIXES))
        if include_checkpoints:
            for checkpoint in checkpoints(run):
                files.update(_tree(output_dir, checkpoint.relative_to(output_dir).as_posix(), lambda p: True))
    for pair in facts.pairs:  # the card's before/after images
        files.update({rel: path for rel, path in pair.files.items() if path.is_file()})
    for rel, path in (extra_files or {}).items():
        clean = repo_path(rel, family=PublishError, field="extra_files")
        if not Path(path).is_file():
            raise PublishError(f"extra file {path} for '{rel}' does not exist", field="extra_files")
        files[clean] = Path(path)
    files.pop("README.md", None)  # our card, below, replaces SimpleTuner's and any other

    known = [s for s in secrets if s]
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=render_model_card(facts).encode())]
    for rel, path in files.items():
        if cancel is not None and cancel.is_set():  # scrubbing reads every text file: a big folder takes a while
            raise stop_error(cancel, doing="while preparing the upload", stage=PublishError.stage)
        scrubbed = scrub_file(path, known)
        operations.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=scrubbed if scrubbed is not None
                                             else str(path)))
    return operations


def _weights(output_dir: Path, *, kind: str) -> dict[str, Path]:
    """What the run trained, by repo path: an adapter's top-level *.safetensors (a LoRA's or a LyCORIS adapter's),
    or a full fine-tune's diffusers folder (`pipeline/`), which becomes the repo's root."""
    if kind == FULL:
        pipeline = output_dir / PIPELINE_DIR
        if not (pipeline / "model_index.json").is_file():
            raise PublishError(f"no full fine-tune in {output_dir}: {PIPELINE_DIR}/model_index.json is missing",
                               field="output_dir")
        return {p.relative_to(pipeline).as_posix(): p for p in sorted(pipeline.rglob("*")) if p.is_file()}
    experts = expert_outputs(output_dir)  # a two-expert model: each expert's files in its own folder
    weights = [path for folder in experts for path in sorted(folder.glob("*.safetensors"))] \
        or sorted(output_dir.glob("*.safetensors"))
    if not weights:
        raise PublishError(f"no LoRA weights in {output_dir}: {LORA_FILE} is missing", field="output_dir")
    return {path.relative_to(output_dir).as_posix(): path for path in weights}


def _tree(root: Path, folder: str, keep: Callable[[Path], bool]) -> dict[str, Path]:
    base = root / folder
    if not base.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file() and keep(p)}


def publish_to_hub(
    output_dir: Path,
    *,
    destination: HubDestination,
    facts: CardFacts,
    on_event: EventSink = ignore_event,
    extra_files: dict[str, Path] | None = None,
    retry: RetryPolicy = RETRY,
    cancel: CancelFlag | None = None,
) -> HubResult:
    """Create (or reuse) the repo and push the run in one commit. `destination` (destinations_of) holds the repo
    and its token, the job's hub.token or HF_TOKEN. Raises HubAuthError, HubNotFound, HubConflict, HubQuotaError or
    PublishError (codes: core/adapters/hub.py); returns only after the commit succeeded."""
    hub, token, endpoint = destination.spec, destination.token, destination.endpoint
    if not token:
        raise HubAuthError("no Hugging Face token: set hub.token in the job or HF_TOKEN in the environment "
                           "(a token with the write role)", field="hub.token")
    secrets = [token]
    operations = plan_hub_commit(output_dir, facts=facts, include_checkpoints=hub.include_checkpoints,
                                 extra_files=extra_files, secrets=secrets, cancel=cancel)
    repo_id = hub.repo_id
    target = HubTarget(repo_id, family=PublishError, field="hub.repo_id", endpoint=endpoint, token=token,
                       token_field="hub.token", write=True)  # noqa: S106 (a field name)
    if is_offline():
        raise offline_error(target, f"publishing {repo_id}")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    visibility = "private" if hub.private else "public"
    _warn_missing_widgets(facts, operations, on_event)
    # The pipeline reports the stage itself (started/completed/failed); these lines say what happens inside it.
    size = human_size(sum(op.upload_info.size for op in operations))
    on_event(LogLine(f"pushing {len(operations)} files ({size}) to {repo_id} ({visibility})"))

    def retried[T](what: str, call: Callable[[], T]) -> T:
        return call_hub(call, target=target, what=what, retry=retry, cancel=cancel, on_event=on_event)

    private, reused = retried("creating the repo", lambda: ensure_repo(api, hub))
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
            secrets=secrets, cancel=cancel)
        return api.create_commit(repo_id=repo_id, repo_type="model", operations=ops,
                                 commit_message=COMMIT_MESSAGES.get(facts.kind, COMMIT_MESSAGES["lora"]),
                                 commit_description=_commit_description(facts))

    info = retried("committing the files", commit)
    from huggingface_hub import hf_hub_url

    oid = info.oid
    files = {op.path_in_repo: hf_hub_url(repo_id, op.path_in_repo, revision=oid, endpoint=endpoint)
             for op in operations}
    result = HubResult(repo_id=repo_id, url=f"{endpoint}/{repo_id}", commit=oid, private=private, files=files)
    on_event(LogLine(f"published {len(files)} files to {result.url} ({oid[:8]})"))
    return result


def _warn_missing_widgets(facts: CardFacts, operations: list[Any], on_event: EventSink) -> None:
    planned = {op.path_in_repo for op in operations}
    shown = [path for path, _ in facts.validation] + [p for pair in facts.pairs for p in (*pair.inputs, pair.output)]
    for path in shown:
        if path not in planned:
            on_event(JobWarning(f"the card shows {path}, which is not in the upload", field="validation"))


def _commit_description(facts: CardFacts) -> str:
    parts = [f"base model: {facts.base_model}", f"family: {facts.model_family}"]
    if facts.steps is not None:
        parts.append(f"steps: {facts.steps}")
    if facts.final_loss is not None:
        parts.append(f"final loss: {facts.final_loss:.4f}")
    return ", ".join(parts)




__all__ = ["HubResult", "plan_hub_commit", "publish_to_hub"]
