"""Photos in an S3 bucket (a real S3-compatible server on loopback) behind Label Studio's S3 import storage.

The backend mirrors the project through Label Studio's resolve URLs (a redirect to a presigned
URL on the storage), trains and pushes; and ``/predict`` answers a task it has never seen when
sent the raw ``s3://`` data Label Studio itself sends, resolving it through Label Studio.
Photos mix grey and colour, sizes and aspect ratios.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest

from connectors.label_studio import LabelStudioClient
from service.app import create_app
from service.settings import Settings
from tests.integration.conftest import Backend, S3Server, wait_for

pytestmark = pytest.mark.integration
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
          '<Choice value="bright"/><Choice value="dark"/></Choices></View>')


def _photo(rng: np.random.Generator, bright: bool, colour: bool) -> bytes:
    """A JPEG of a random size and aspect ratio; bright or dark, grey or tinted."""
    from PIL import Image

    w, h = int(rng.integers(120, 400)), int(rng.integers(90, 300))
    base = rng.normal(190 if bright else 60, 25, (h, w))
    arr = np.repeat(base[..., None], 3, axis=2)
    if colour:
        arr[..., int(rng.integers(0, 3))] += 40
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _s3_project(ls: LabelStudioClient, s3: S3Server, title: str, bucket: str, prefix: str) -> tuple[int, int]:
    pid = ls.create_project(title, CONFIG)
    storage = ls.ls.import_storage.s3.create(
        project=pid, bucket=bucket, prefix=prefix, aws_access_key_id=s3.KEY, aws_secret_access_key=s3.SECRET,
        s3endpoint=s3.endpoint, region_name="us-east-1", presign=True, use_blob_urls=True,
        regex_filter=r".*\.jpg", recursive_scan=True, title="photos")
    return pid, int(storage.id)


def _sync(ls: LabelStudioClient, storage_id: int, pid: int, n: int) -> list[int]:
    ls.ls.import_storage.s3.sync(id=storage_id)
    return wait_for(lambda: len(ids := [int(t["id"]) for t in ls.iter_tasks(pid, fields="task_only")]) >= n and ids,
                    timeout=120)


def test_s3_photos_mirror_train_push_and_predict_raw_uris(label_studio, ls_client, s3_server, tmp_path) -> None:
    rng = np.random.default_rng(0)
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    truth_by_key = {}
    for i in range(36):
        bright, colour = bool(i % 2), i % 3 == 0
        key = f"set/img{i:03d}.jpg"
        s3.put_object(Bucket="photos", Key=key, Body=_photo(rng, bright, colour))
        truth_by_key[key] = "bright" if bright else "dark"
    pid, storage = _s3_project(ls_client, s3_server, "s3 photos", "photos", "set/")
    ids = _sync(ls_client, storage, pid, 36)
    tasks = {int(t["id"]): t for t in ls_client.tasks_by_id(pid, ids)}
    assert all("/resolve/?fileuri=" in t["data"]["image"] for t in tasks.values()), "resolve URLs, not s3://"

    def key_of(task: dict) -> str:
        import base64
        from urllib.parse import parse_qs, urlsplit

        uri = base64.b64decode(parse_qs(urlsplit(task["data"]["image"]).query)["fileuri"][0]).decode()
        return uri.split("photos/", 1)[1]

    truth = {t: truth_by_key[key_of(task)] for t, task in tasks.items()}
    for t in sorted(truth)[:12]:
        ls_client.create_annotation(t, [{"from_name": "choice", "to_name": "image", "type": "choices",
                                          "value": {"choices": [truth[t]]}}])
    s = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                 model_dir=tmp_path / "models", data_allowed_hosts=[f"127.0.0.1:{s3_server.port}"],
                 retrain_debounce_seconds=0.5, sae_epochs=30, push_head=10, push_top_k=5,
                 poll_interval_seconds=3600, image_size=32, push_mode="queue")
    backend = Backend(create_app(s)).start()
    try:
        ml = ls_client.connect_ml_backend(pid, backend.url)
        ls_client.train(ml)
        status = wait_for(lambda: (st := httpx.get(f"{backend.url}/projects/{pid}/status").json())["model_version"]
                          and not st["training"] and not st["push_pending"] and st, timeout=300)
        assert status["mirror"]["stored"] == 36 and status["skipped_count"] == 0
        assert ls_client.model_versions(pid).get(status["model_version"]) == 10, "the head was pushed"

        queue = status["queue_project"]
        copies = ls_client.queue_copies(queue)
        assert len(copies) == 5
        for source, copy in copies.items():  # the queue's annotators see the photo, now and after any expiry
            image = ls_client.get_task(copy)["data"]["image"]
            assert "X-Amz-" not in image, "a presigned URL in the copy would expire"
            shown = httpx.get(label_studio.url + image, headers={"Authorization": f"Token {label_studio.token}"},
                              follow_redirects=True, timeout=30)
            assert shown.status_code == 200 and shown.content == s3.get_object(
                Bucket="photos", Key=key_of(tasks[source]))["Body"].read()

        # a second project on the same bucket: its tasks were never mirrored by the backend
        other, other_storage = _s3_project(ls_client, s3_server, "s3 photos, unseen", "photos", "set/")
        unseen = _sync(ls_client, other_storage, other, 36)
        unseen_tasks = {int(t["id"]): t for t in ls_client.tasks_by_id(other, unseen)}
        sample = sorted(unseen_tasks)[:8]
        body = {"project": f"{pid}.1", "label_config": CONFIG,
                "tasks": [{"id": t, "data": {"image": f"s3://photos/{key_of(unseen_tasks[t])}"}} for t in sample]}
        answer = httpx.post(f"{backend.url}/predict", json=body, timeout=120).json()["results"]
        assert len(answer) == len(sample)
        assert all("error" not in a and a["model_version"] == status["model_version"] for a in answer), answer
        predicted = [a["result"][0]["value"]["choices"][0] for a in answer]
        right = sum(p == truth_by_key[key_of(unseen_tasks[t])] for p, t in zip(predicted, sample, strict=True))
        assert right >= 6, f"bright vs dark from 12 labels: {right}/8 right"

        missing = {"project": f"{pid}.1", "label_config": CONFIG,
                   "tasks": [{"id": sample[0], "data": {"image": "s3://photos/set/missing.jpg"}}]}
        error = httpx.post(f"{backend.url}/predict", json=missing, timeout=60).json()["results"][0]["error"]
        assert "S3" in error, error
    finally:
        backend.stop()


def test_local_storage_photos_mirror_train_and_predict(label_studio, ls_client, tmp_path) -> None:
    rng = np.random.default_rng(1)
    folder = label_studio.local_files_root / "photos"
    folder.mkdir(exist_ok=True)
    truth_by_name = {}
    for i in range(30):
        bright = bool(i % 2)
        (folder / f"p{i:03d}.jpg").write_bytes(_photo(rng, bright, colour=i % 4 == 0))
        truth_by_name[f"p{i:03d}.jpg"] = "bright" if bright else "dark"
    pid = ls_client.create_project("local photos", CONFIG)
    storage = ls_client.ls.import_storage.local.create(project=pid, path=str(folder), use_blob_urls=True,
                                                       regex_filter=r".*\.jpg", title="photos")
    ls_client.ls.import_storage.local.sync(id=int(storage.id))
    ids = wait_for(lambda: len(v := [int(t["id"]) for t in ls_client.iter_tasks(pid, fields="task_only")]) >= 30
                   and v, timeout=120)
    tasks = {int(t["id"]): t for t in ls_client.tasks_by_id(pid, ids)}
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks.values())
    truth = {t: truth_by_name[task["data"]["image"].rsplit("/", 1)[1]] for t, task in tasks.items()}
    for t in sorted(truth)[:10]:
        ls_client.create_annotation(t, [{"from_name": "choice", "to_name": "image", "type": "choices",
                                          "value": {"choices": [truth[t]]}}])
    s = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                 model_dir=tmp_path / "models", retrain_debounce_seconds=0.5, sae_epochs=30, push_head=10,
                 push_top_k=5, poll_interval_seconds=3600, image_size=32)
    backend = Backend(create_app(s)).start()
    try:
        ls_client.train(ls_client.connect_ml_backend(pid, backend.url))
        status = wait_for(lambda: (st := httpx.get(f"{backend.url}/projects/{pid}/status").json())["model_version"]
                          and not st["training"] and not st["push_pending"] and st, timeout=300)
        assert status["mirror"]["stored"] == 30 and status["skipped_count"] == 0
        sample = sorted(truth)[10:18]
        fresh = {"project": f"{pid}.1", "label_config": CONFIG,
                 "tasks": [{"id": 10**6 + t, "data": tasks[t]["data"]} for t in sample]}  # ids it never saw
        answer = httpx.post(f"{backend.url}/predict", json=fresh, timeout=120).json()["results"]
        assert all("error" not in a for a in answer), answer
        right = sum(a["result"][0]["value"]["choices"][0] == truth[t] for a, t in zip(answer, sample, strict=True))
        assert right >= 6, f"bright vs dark from 10 labels: {right}/8 right"
        outside = {"project": f"{pid}.1", "label_config": CONFIG,
                   "tasks": [{"id": 10**6, "data": {"image": "/data/local-files/?d=elsewhere/x.jpg"}}]}
        error = httpx.post(f"{backend.url}/predict", json=outside, timeout=60).json()["results"][0]["error"]
        assert "Local Storage" in error, error
    finally:
        backend.stop()
