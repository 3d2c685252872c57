"""Benchmark: downloading CVDF-style archives from S3, oiv4 vs the notebook's `aws s3 sync`, one run.

Starts moto's S3 server in its own process on 127.0.0.1, uploads `--objects` public-read objects of
`--mib` MiB each under `s3://open-images-dataset/tar/train_<x>.tar.gz`, then downloads them all with:

- the notebook: `aws s3 --no-sign-request sync s3://open-images-dataset/tar/ DEST --exclude "*" --include
  "train_*.tar.gz"` (awscli installed into its own venv under /tmp on first use);
- oiv4: the archive stage's downloader (`oiv4.stages.archives.download.download_to_storage`, anonymous s3fs client,
  parallel ranged parts, sidecar resume), archive after archive as `oiv4 archives` does, with its default
  64 MiB parts and also with awscli's 8 MiB parts (moto reads the whole object for every ranged GET, so
  the part size changes the server's cost as much as the client's).

Every downloaded file is checked byte for byte (SHA-256). Best of `--passes`.

    .venv/bin/python benchmarks/archive_download.py [--objects 4] [--mib 128] [--connections 8]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

AWS_VENV = Path("/tmp/oiv4-bench-awscli")
BUCKET = "open-images-dataset"


def ensure_awscli() -> Path:
    aws = AWS_VENV / "bin" / "aws"
    if not aws.exists():
        subprocess.run([sys.executable, "-m", "venv", str(AWS_VENV)], check=True)
        subprocess.run([str(AWS_VENV / "bin" / "pip"), "install", "-q", "awscli"], check=True)
    return aws


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while c := fh.read(8 << 20):
            h.update(c)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--work", default="/tmp/oiv4-bench-download")
    args = ap.parse_args()

    import boto3

    from oiv4.contracts.transfer import TransferSettings
    from oiv4.io.storage import Storage
    from oiv4.stages.archives.download import download_to_storage, stat_object
    from oiv4.stages.archives.sources import S3Source

    aws = ensure_awscli()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    proc, endpoint = start_moto()
    try:
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        s3.create_bucket(Bucket=BUCKET, ACL="public-read")
        names = [f"train_{x}.tar.gz" for x in "0123456789abcdef"[: args.objects]]
        digests = {}
        for i, name in enumerate(names):
            body = os.urandom(args.mib << 20) if i == 0 else body[1:] + body[:1]  # noqa: F821 - distinct objects
            digests[name] = hashlib.sha256(body).hexdigest()
            s3.put_object(Bucket=BUCKET, Key=f"tar/{name}", Body=body, ACL="public-read")
        del body
        total = args.objects * (args.mib << 20)
        results: dict[str, float] = {}

        def run_aws() -> float:
            dest = work / "aws"
            shutil.rmtree(dest, ignore_errors=True)
            env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null"}
            cmd = [str(aws), "s3", "--no-sign-request", "--endpoint-url", endpoint, "sync", f"s3://{BUCKET}/tar/",
                   str(dest), "--exclude", "*", "--include", "train_*.tar.gz", "--only-show-errors"]  # fmt: skip
            t = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            elapsed = time.perf_counter() - t
            assert {n: sha(dest / n) for n in names} == digests
            return elapsed

        def run_oiv4(part_mib: int) -> float:
            dest = work / "oiv4"
            shutil.rmtree(dest, ignore_errors=True)
            storage = Storage(str(dest))
            settings = TransferSettings(part_size=part_mib << 20, connections=args.connections)
            # The source's set-up (S3 client, service model) is timed too: aws pays for its own start-up.
            t = time.perf_counter()
            source = S3Source(f"s3://{BUCKET}/tar/", endpoint_url=endpoint, transfer=settings)
            for name in names:
                download_to_storage(
                    source, stat_object(source, name, settings), storage, f"targets/images/{name}", settings
                )
            elapsed = time.perf_counter() - t
            assert {n: sha(dest / "targets/images" / n) for n in names} == digests
            return elapsed

        for _ in range(args.passes):
            for key, fn in (
                ("aws s3 sync --no-sign-request (8 MiB parts, 10 threads)", run_aws),
                (f"oiv4 download (64 MiB parts, {args.connections} connections)", lambda: run_oiv4(64)),
                (f"oiv4 download (8 MiB parts, {args.connections} connections)", lambda: run_oiv4(8)),
            ):
                results[key] = min(results.get(key, float("inf")), fn())
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.objects} objects x {args.mib} MiB from moto_server (own process); load {os.getloadavg()[0]:.1f}")
    print(f"{'contender':58s} {'seconds':>8s} {'MB/s':>8s}")
    for k, v in results.items():
        print(f"{k:58s} {v:8.2f} {total / v / 1e6:8.0f}")
    base = results["aws s3 sync --no-sign-request (8 MiB parts, 10 threads)"]
    for k, v in results.items():
        if k.startswith("oiv4"):
            print(f"aws / {k}: {base / v:.2f}x")


if __name__ == "__main__":
    main()
