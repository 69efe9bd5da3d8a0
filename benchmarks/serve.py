"""swrr-serve under load: N concurrent clients for a bounded time against a real server process
on localhost, next to swrr-predict's throughput on the same clips, in one run.

    python benchmarks/serve.py --quick                 # tiny encoders, 32 clips, 4 clients, 15 s, CPU
    python benchmarks/serve.py --clients 16 --seconds 60 --device cuda

Measures:
  predict   the loaded model scoring every clip in one EmotionRecognizer.predict call (what
            `swrr-predict` does after loading): rows/s, best of 3 calls before and 3 after the
            load; the better is the reference (on a shared machine a call is only ever slowed down).
  serve     clients POSTing the clips (one per request, with their transcript) as fast as answers
            come, for --seconds: answered requests/s (200), p50/p99 latency of the 200s, the 503s
            (queue full) and the mean number of uploads that shared a forward.
  ratio     serve requests/s / predict rows/s: what micro-batching recovers of batch throughput.
The server runs with --segment none (as predict here), --max-batch --max-batch, and a queue of
4 x clients. Encoders and head are random-weight models of the chosen size (benchmarks/predict.py).
Prints readable lines and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch

from extract import base_encoders, synthetic_clips, write_dataset
from predict import make_bundle, save_encoders
from swrr.device import resolve_device
from swrr.extract.encoders import tiny_encoders
from swrr.predict.recognizer import EmotionRecognizer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, device: str, clients: int, max_batch: int, log: Path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "swrr.predict.server", "--model", str(bundle), "--port", str(port),
                                "--device", device, "--segment", "none", "--max-batch", str(max_batch),
                                "--max-queue", str(4 * clients), "--request-timeout", "120"],
                               stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"swrr-serve exited: {log.read_text()}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("swrr-serve did not start within 600 s")


def load(url: str, clips, clients: int, seconds: float):
    """-> list of (status, latency s, batch size) of every request the clients made in `seconds`."""
    results, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int):
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < deadline:
            path, text = rng.choice(clips)
            start = time.perf_counter()
            try:
                response = session.post(url + "/predict", files={"file": (path.name, path.read_bytes(), "audio/wav")},
                                        data={"text": text}, timeout=180)
                status = response.status_code
                size = response.json().get("batch_size", 0) if status == 200 else 0
            except requests.RequestException:
                status, size = "dropped", 0
            with lock:
                results.append((status, time.perf_counter() - start, size))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def predict_rate(recognizer, manifest: Path, repeats: int = 3) -> float:
    """Rows/s of one EmotionRecognizer.predict call over every clip (swrr-predict after loading),
    the best of `repeats` calls (other jobs on a shared machine only ever slow a call down), made
    from a worker thread as the server makes its calls: on a loaded CPU, torch's OpenMP threads
    behave differently in the main thread (measured there: 0.5-4.6 rows/s vs 5.1-5.4 from a worker
    thread for the same call), and the ratio must compare like with like."""
    from concurrent.futures import ThreadPoolExecutor

    def once() -> float:
        start = time.perf_counter()
        table = recognizer.predict(manifest, segment="none", progress=False)
        return len(table) / (time.perf_counter() - start)

    with ThreadPoolExecutor(1) as worker:
        return max(worker.submit(once).result() for _ in range(repeats))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--n", type=int, default=200, help="clips")
    parser.add_argument("--encoders", default="base", choices=["base", "tiny"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients send requests")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="tiny encoders, 32 clips, 4 clients, 15 s, CPU")
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.encoders, args.n, args.clients, args.seconds = "cpu", "tiny", 32, 4, 15.0
    device = resolve_device("auto").type if args.device == "auto" else args.device
    audio, text = base_encoders() if args.encoders == "base" else tiny_encoders()
    waves, durations, texts = synthetic_clips(args.n)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "clips": args.n,
              "encoders": args.encoders, "clients": args.clients, "seconds": args.seconds, "max_batch": args.max_batch}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        manifest = write_dataset(tmp / "clips", waves, durations, texts)
        audio_dir, text_dir = save_encoders(audio, text, tmp / "encoders")
        bundle = make_bundle(tmp / "bundle", audio_dir, text_dir, audio.dim, "float16")
        del audio, text
        recognizer = EmotionRecognizer.from_pretrained(bundle, device=device, workers=0)
        recognizer.predict(manifest, segment="none", progress=False)  # meets every batch shape once
        result["predict_rows_s_before"] = predict_rate(recognizer, manifest)

        clips = [(tmp / "clips" / f"{i:05d}.wav", t) for i, t in enumerate(texts)]
        process, url = start_server(bundle, device, args.clients, args.max_batch, tmp / "server.log")
        try:
            load(url, clips[:8], args.clients, min(5.0, args.seconds / 4))  # warm-up, not counted
            answers = load(url, clips, args.clients, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)
        # again after the load: on a shared machine the two differ; the better one is the reference
        result["predict_rows_s_after"] = predict_rate(recognizer, manifest)
        result["predict_rows_s"] = max(result["predict_rows_s_before"], result["predict_rows_s_after"])
    ok = [a for a in answers if a[0] == 200]
    latencies = np.array([a[1] for a in ok]) if ok else np.array([np.nan])
    result.update(requests=len(answers), ok=len(ok), busy_503=sum(a[0] == 503 for a in answers),
                  other=sum(a[0] not in (200, 503) for a in answers),
                  serve_requests_s=len(ok) / args.seconds, p50_ms=1000 * float(np.percentile(latencies, 50)),
                  p99_ms=1000 * float(np.percentile(latencies, 99)),
                  mean_batch=float(np.mean([a[2] for a in ok])) if ok else 0.0)
    result["serve_over_predict"] = result["serve_requests_s"] / result["predict_rows_s"]
    report(result)
    return result


def report(r: dict) -> None:
    print(f"device {r['device']}, {r['encoders']} encoders, {r['clips']} clips, {r['clients']} clients for "
          f"{r['seconds']:.0f} s, --max-batch {r['max_batch']}")
    print(f"  predict (loaded, one call)   {r['predict_rows_s']:8.1f} rows/s  (before the load "
          f"{r['predict_rows_s_before']:.1f}, after {r['predict_rows_s_after']:.1f})")
    print(f"  serve                        {r['serve_requests_s']:8.1f} requests/s answered 200 "
          f"({r['serve_over_predict']:.2f} x predict), p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
          f"mean batch {r['mean_batch']:.1f}")
    print(f"  answers: {r['ok']} x 200, {r['busy_503']} x 503, {r['other']} other (of {r['requests']})")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
