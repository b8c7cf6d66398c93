"""Duplicate storm: many PACS clients send the same study at once, several times each, to two API processes.

Every request must succeed (the same bytes again are a success), and each instance must end up as exactly
one row and one file: the losers of each race remove their copies at once, leaving nothing in tmp/.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from pydicom.uid import generate_uid

from app.client import stow
from app.processes import Service
from bench.chaos.common import files_on_disk
from testkit.dicom_factory import make_series
from testkit.servers import Stack

SHORT = {"clients": 8, "sends": 3, "instances": 30}
LONG = {"clients": 20, "sends": 5, "instances": 50}


def run(make_stack, workdir, *, clients: int, sends: int, instances: int) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    stack: Stack = make_stack(worker=False)
    second = Service(env=stack.service.env, log_dir=stack.service.log_dir / "second")  # same database and storage
    second.start_api()
    study = generate_uid()
    half = instances // 2  # a study of two series
    blobs = make_series(half, study_uid=study)[1] + make_series(instances - half, study_uid=study)[1]
    headers = {"Authorization": f"Bearer {stack.tokens['pacs']}"}

    def client(i: int) -> list[int]:
        url = (stack.service.url, second.url)[i % 2]
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            return [stow(c, blobs).status_code for _ in range(sends)]

    try:
        with ThreadPoolExecutor(clients) as pool:
            codes = [code for codes in pool.map(client, range(clients)) for code in codes]
        rows = stack.scalar("SELECT count(*) FROM instances")
        paths = stack.scalar("SELECT count(DISTINCT storage_path) FROM instances")
        uids = stack.scalar("SELECT count(DISTINCT sop_instance_uid) FROM instances")
        files = len(files_on_disk(stack))
        leftovers = sum(1 for _ in (stack.storage / "tmp").iterdir())
    finally:
        second.stop()
        stack.service.stop()
    assert set(codes) == {200}, f"status codes {sorted(set(codes))}"
    assert rows == paths == uids == files == instances, f"{rows} rows, {paths} paths, {files} files for {instances}"
    assert leftovers == 0, f"{leftovers} temporary file(s) left"
    return {
        "clients": clients,
        "sends_per_client": sends,
        "instances": instances,
        "api_processes": 2,
        "runs": len(codes),
        "files_tried": len(codes) * instances,
        "rows": rows,
        "files": files,
        "lost": instances - uids,
        "seconds": round(time.monotonic() - t0, 1),
    }
