"""HF dataset repos as a source, against the local Hub API (tests/support/hub_server.py).

huggingface_hub reads HF_HUB_OFFLINE once, at import, and this test process runs offline (conftest.py), so each
staging runs in a child process with the Hub client online and HF_ENDPOINT on the local server.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.dataset.stage import stage_dataset
from core.errors import DatasetError
from core.settings import Settings
from core.spec.job import parse_job
from tests.support.hub_server import client_env, running_hub_server

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"model_family": "sdxl", "model_name": "some/sdxl-model"}
DRIVER = """
import json, sys
from pathlib import Path
from core.dataset.stage import caption_options, stage_dataset
from core.errors import JobError
from core.pipeline import hub_token
from core.settings import Settings
from core.spec.job import parse_job
results = []
for job, dest in json.loads(sys.argv[1]):
    events = []
    try:
        spec, settings = parse_job(job), Settings.from_env()
        manifest = stage_dataset(spec.dataset, Path(dest), captions=caption_options(spec), settings=settings,
                                 token=hub_token(spec, settings), on_event=events.append)
    except JobError as error:
        results.append({"error": error.to_payload()})
        continue
    results.append({
        "images": {e.path.name: [e.caption, e.caption_source, e.width, e.height] for e in manifest.images},
        "skipped": [[s.name, s.reason] for s in manifest.skipped],
        "source": manifest.source,
        "events": [e.to_dict() for e in events],
    })
print(json.dumps(results))
"""

def png(color=(200, 30, 30), size=(40, 30), kind="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=kind)
    return buffer.getvalue()


def parquet(rows: list[dict], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def stage_in_child(hub, runs: list[tuple[dict, Path]], *, token: str | None = None) -> list[dict]:
    """Stage each (dataset, dest) in one child process (one import of the Hub client for all of them)."""
    env = client_env(hub, base={k: v for k, v in os.environ.items() if k != "HF_TOKEN"})
    env.update(HF_HOME=str(runs[0][1].parent / "hf-home"), PYTHONPATH=str(ROOT))
    if token:
        env["HF_TOKEN"] = token
    jobs = [[{"config": CONFIG, **job}, str(dest)] for job, dest in runs]
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(jobs)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_image_files_with_captions_pinned_to_one_commit(tmp_path: Path):
    with running_hub_server(connect=False) as hub:
        sha = hub.add_repo("user/pets", repo_type="dataset", private=False, files={
            ".gitattributes": b"*.png filter=lfs", "README.md": b"# pets", "train/cat.png": png(),
            "train/cat.txt": b"a cat", "train/dog.jpg": png(kind="JPEG"), "meta.csv": b"a,b",
        }).head.oid
        v1 = hub.add_commit("user/pets", {"old.png": png()}, revision="v1").oid
        out, old = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "user/pets"}, "trigger_word": "sks"}, tmp_path / "job"),
            ({"dataset": {"hf_repo": "user/pets", "revision": "v1"}}, tmp_path / "job-v1"),
        ])
        assert out["images"] == {"cat.png": ["sks, a cat", "file", 40, 30], "dog.jpg": ["sks", "trigger_word", 40, 30]}
        assert sorted(out["skipped"]) == [["README.md", "not an image"], ["meta.csv", "not an image"]]
        assert out["source"] == "hf dataset user/pets@main"
        downloads = [request.path for request in hub.requests_to("/resolve/")]
        assert downloads and all(f"/resolve/{v1 if path.endswith('old.png') else sha}/" in path for path in downloads)
        assert not any(p.endswith(("README.md", "meta.csv", ".gitattributes")) for p in downloads)
        progress = [e for e in out["events"] if e["type"] == "download"]
        assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
        assert list(old["images"]) == ["old.png"]


def test_parquet_with_image_and_caption_columns(tmp_path: Path):
    schema = pa.schema([("image", IMAGE_STRUCT), ("text", pa.string()), ("score", pa.float32())])
    rows = [
        {"image": {"bytes": png((i * 40, 0, 0)), "path": f"pic{i}.png"}, "text": f"caption {i}", "score": 1.0}
        for i in range(3)
    ]
    rows.append({"image": {"bytes": None, "path": "only-a-path.png"}, "text": "no bytes", "score": 0.0})
    rows.append({"image": {"bytes": b"not an image", "path": "bad.png"}, "text": None, "score": 0.0})
    custom = pa.schema([("jpg", pa.binary()), ("prompt", pa.string())])
    with running_hub_server(connect=False) as hub:
        hub.add_repo("org/rows", repo_type="dataset", private=False,
                     files={"data/train-00000.parquet": parquet(rows, schema), "README.md": b"x"})
        hub.add_repo("org/custom", repo_type="dataset", private=False,
                     files={"d.parquet": parquet([{"jpg": png(kind="JPEG"), "prompt": "custom"}], custom)})
        out, explicit, wrong = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "org/rows"}}, tmp_path / "a"),
            ({"dataset": {"hf_repo": "org/custom", "image_column": "jpg", "caption_column": "prompt"}}, tmp_path / "b"),
            ({"dataset": {"hf_repo": "org/custom", "caption_column": "caption"}}, tmp_path / "c"),
        ])
        assert out["images"] == {
            f"00000{i + 1}_pic{i}.png": [f"caption {i}", "column", 40, 30] for i in range(3)
        }
        assert sorted(reason for _, reason in out["skipped"]) == [
            "no image bytes", "not a decodable image", "not an image",
        ]
        assert list(explicit["images"].values()) == [["custom", "column", 40, 30]]
        assert wrong["error"]["field"] == "dataset.caption_column"
        assert "no column 'caption' (columns: jpg, prompt)" in wrong["error"]["message"]


def test_private_repos_missing_repos_and_revisions(tmp_path: Path):
    with running_hub_server(token="hf_secret_token_value", connect=False) as hub:
        hub.add_repo("me/private", repo_type="dataset", private=True, files={"a.png": png()})
        hub.add_repo("me/docs", repo_type="dataset", private=False, files={"README.md": b"x", "notes.txt": b"y"})
        denied, missing, nothing = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "me/private"}}, tmp_path / "a"),
            ({"dataset": {"hf_repo": "me/nothing"}}, tmp_path / "c"),
            ({"dataset": {"hf_repo": "me/docs"}}, tmp_path / "e"),
        ])
        allowed, revision = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "me/private"}}, tmp_path / "b"),
            ({"dataset": {"hf_repo": "me/private", "revision": "v9"}}, tmp_path / "d"),
        ], token="hf_secret_token_value")
    assert denied["error"]["field"] == "dataset.hf_repo"
    assert "not found (or private: give a token with access)" in denied["error"]["message"]
    assert list(allowed["images"]) == ["a.png"]
    assert "hf_secret_token_value" not in json.dumps([denied, allowed, revision])
    assert missing["error"]["code"] == "hub_not_found" and "me/nothing" in missing["error"]["message"]
    assert revision["error"]["field"] == "dataset.revision"
    assert "has no image files and no parquet files" in nothing["error"]["message"]


def test_offline_mode_and_bad_repo_ids_are_clear_errors_in_process(tmp_path: Path):
    """This process imported huggingface_hub with HF_HUB_OFFLINE=1 (conftest.py)."""
    settings = Settings.from_env({})
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE is set") as caught:
        stage_dataset(parse_job({"dataset": {"hf_repo": "user/pets"}, "config": CONFIG}).dataset, tmp_path / "a",
                      settings=settings)
    assert caught.value.field == "dataset.hf_repo"
    with pytest.raises(DatasetError, match="is not a dataset repo id") as caught:
        stage_dataset(parse_job({"dataset": {"hf_repo": "../../etc"}, "config": CONFIG}).dataset, tmp_path / "b",
                      settings=settings)
    assert caught.value.field == "dataset.hf_repo"


CACHED_DRIVER = """
import json, sys
from pathlib import Path
from core.cache.datasets import stage_dataset_cached
from core.cache.store import Cache
from core.dataset.stage import caption_options
from core.errors import JobError
from core.pipeline import hub_token
from core.settings import Settings
from core.spec.job import parse_job
spec, settings = parse_job(json.loads(sys.argv[1])), Settings.from_env()
try:
    manifest, reuse = stage_dataset_cached(spec.dataset, Path(sys.argv[2]), settings=settings,
                                           cache=Cache.from_settings(settings), captions=caption_options(spec),
                                           token=hub_token(spec, settings))
    print(json.dumps({"images": sorted(e.path.name for e in manifest.images), "cache": reuse.status}))
except JobError as error:
    print(json.dumps({"error": error.to_payload()}))
"""


def test_a_private_dataset_in_the_cache_is_reused_only_by_a_job_whose_token_can_read_it(tmp_path: Path):
    """A job staged a private dataset at a pinned commit with a token that could read it; a later job at the same
    commit whose token cannot gets the Hub's refusal, never the cached copy."""
    def stage(token: str | None, dest: Path, sha: str, hub) -> dict:
        env = client_env(hub, base={k: v for k, v in os.environ.items() if k != "HF_TOKEN"})
        env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(ROOT), CACHE_DIR=str(tmp_path / "cache"))
        if token:
            env["HF_TOKEN"] = token
        job = {"config": CONFIG, "dataset": {"hf_repo": "me/private", "revision": sha}}
        done = subprocess.run([sys.executable, "-c", CACHED_DRIVER, json.dumps(job), str(dest)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    with running_hub_server(token="hf_secret_token_value", connect=False) as hub:
        sha = hub.add_repo("me/private", repo_type="dataset", private=True, files={"a.png": png()}).head.oid
        first = stage("hf_secret_token_value", tmp_path / "a", sha, hub)
        again = stage("hf_secret_token_value", tmp_path / "b", sha, hub)
        other = stage(None, tmp_path / "c", sha, hub)
    assert first == {"images": ["a.png"], "cache": "stored"}
    assert again == {"images": ["a.png"], "cache": "reused"}
    assert other["error"]["field"] == "dataset.hf_repo" and other["error"]["code"] == "hub_not_found"
    assert not (tmp_path / "c" / "images").exists() or not any((tmp_path / "c").rglob("a.png"))
