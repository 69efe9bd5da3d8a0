"""`swrr-serve`: a trained model behind HTTP (FastAPI + uvicorn), a client of `swrr.EmotionRecognizer`.

    swrr-serve --model runs/demo-split                 # http://127.0.0.1:8000/ (page), /docs (OpenAPI)
    curl -F file=@clip.wav -F text="what was said" http://127.0.0.1:8000/predict

Routes: POST /predict (multipart: `file`, optional `text`, `asr`, `calibration`, `abstain_below`),
GET /health, GET /model (the bundle's config.json and model card), GET /docs, GET / (the page).

Every upload is written to a private temporary folder under a name the server makes (no client
value becomes a path) and deleted when its request is done. Requests wait in a bounded queue
(full: 503 + Retry-After); one batcher takes what arrives within `batch_wait_ms` (up to
`max_batch` uploads) and scores it with ONE `EmotionRecognizer.predict` call, so concurrent
uploads share their encoder and head forwards, and the numbers are swrr-predict's (same call path).
Every error is JSON {"error": "...", "status": N} naming the problem; the server keeps serving.

(No `from __future__ import annotations` in this module: FastAPI reads the route's annotations.)
"""
import asyncio
import contextlib
import hmac
import logging
import math
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from swrr.bundle import CARD, read_config
from swrr.errors import SwrrError
from swrr.extract.audio import AudioError, probe_audio
from swrr.extras import require
from swrr.predict.engine import NO_TEXT
from swrr.predict.inputs import AUDIO_SUFFIXES
from swrr.predict.runner import SEGMENT_MODES

logger = logging.getLogger("swrr.serve")  # swrr-serve shows it on stdout (swrr.cli.console_output)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
FIELDS = ("file", "text", "asr", "calibration", "abstain_below")  # what POST /predict reads
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
UPLOAD_NAME = "upload"  # the server's own name for an upload (+ a whitelisted suffix)


class RequestError(Exception):
    """A request that cannot be served: HTTP `status` and a message naming the problem."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass
class ServeConfig:
    """Everything `swrr-serve` can be told (the defaults are its flags' defaults)."""

    model: str
    fold: Optional[int] = None
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: Optional[str] = None  # when set, every route but /health needs "Authorization: Bearer KEY"
    cors: Sequence[str] = ()  # origins allowed to call the API from a browser (none: no CORS headers)
    asr: Optional[str] = None  # ASR model for requests with asr=true
    segment: str = "vad"  # long uploads: as swrr-predict --segment
    max_upload_mb: float = 25.0  # request bodies over this: 413
    max_audio_seconds: float = 600.0  # longer audio: 413 (scoring an hour would hold the queue)
    request_timeout: float = 60.0  # seconds from arrival to answer; then 504
    max_queue: int = 64  # uploads waiting; more: 503 + Retry-After
    max_batch: int = 16  # uploads scored together in one forward
    batch_wait_ms: float = 5.0  # how long the batcher waits for more uploads to join a batch
    workers: int = 0  # audio decoding processes per batch (0: in the batcher's thread)
    audio_encoder: Optional[str] = None
    text_encoder: Optional[str] = None

    def __post_init__(self):
        problems = []
        if self.segment not in SEGMENT_MODES:
            problems.append(f"--segment must be one of {', '.join(SEGMENT_MODES)}, got {self.segment!r}")
        for name in ("max_upload_mb", "max_audio_seconds", "request_timeout", "batch_wait_ms"):
            if not getattr(self, name) >= 0 or not math.isfinite(getattr(self, name)):
                problems.append(f"--{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name)}")
        for name in ("max_queue", "max_batch"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("--api-key must not be empty")
        if problems:
            raise SwrrError("; ".join(problems))

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS


@dataclass
class Job:
    """One upload waiting to be scored, and the future its request awaits."""

    folder: Path  # the upload's private temporary folder (the batcher removes it when done with it)
    path: Path
    text: Optional[str]
    options: Tuple  # (asr, calibration, abstain_below): uploads share a forward only with equal options
    future: asyncio.Future
    batch_size: int = 0  # filled in when scored: how many uploads shared its forward


@dataclass
class Batcher:
    """The bounded queue and the one task that scores it, a batch at a time, in one worker thread
    (the model is not shared between threads)."""

    recognizer: Any  # swrr.EmotionRecognizer
    config: ServeConfig
    queue: asyncio.Queue = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="swrr-model"))
    batches: int = 0
    served: int = 0

    def __post_init__(self):
        self.queue = asyncio.Queue(maxsize=self.config.max_queue)

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            retry = max(1, math.ceil(self.config.request_timeout / 4))
            raise RequestError(503, f"the server is busy ({self.config.max_queue} uploads are waiting); "
                                    f"retry in {retry} s", {"Retry-After": str(retry)}) from None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.config.batch_wait_ms / 1000
            while len(jobs) < self.config.max_batch:
                try:
                    jobs.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            for job in jobs:
                if job.future.done():  # its request timed out: not scored
                    shutil.rmtree(job.folder, ignore_errors=True)
            jobs = [job for job in jobs if not job.future.done()]
            groups: Dict[Tuple, List[Job]] = {}
            for job in jobs:
                groups.setdefault((job.text is not None, *job.options), []).append(job)
            for group in groups.values():
                try:
                    tables = await loop.run_in_executor(self.executor, self.score, group)
                except Exception as exc:  # noqa: BLE001 - the batch's requests get the error, the server goes on
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                finally:
                    for job in group:
                        shutil.rmtree(job.folder, ignore_errors=True)
                self.batches += 1
                for job, rows in zip(group, tables):
                    job.batch_size = len(group)
                    if not job.future.done():
                        job.future.set_result(rows)
                        self.served += 1

    def score(self, jobs: List[Job]) -> List[Any]:
        """The table rows of each job's upload, from one EmotionRecognizer.predict call."""
        asr, calibration, abstain_below = jobs[0].options
        texts = [job.text for job in jobs] if jobs[0].text is not None else None
        table = self.recognizer.predict([job.path for job in jobs], text=texts, segment=self.config.segment,
                                        aggregate="mean", asr=asr, calibration=calibration,
                                        abstain_below=abstain_below, progress=False)
        return [table[table["file"] == str(job.path)] for job in jobs]


# ------------------------------------------------------------------------------ requests
def _form_flag(value, name: str, default: bool) -> bool:
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise RequestError(400, f"field {name!r} must be true or false, got {str(value)[:40]!r}")


def _form_probability(value) -> Optional[float]:
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0.0 < number <= 1.0:
        raise RequestError(400, f"field 'abstain_below' must be a probability in (0, 1], got {str(value)[:40]!r}")
    return number


def upload_suffix(filename: Optional[str]) -> str:
    """The upload's file suffix if it is one of the audio suffixes swrr reads, else none: the
    client's name is never used otherwise (soundfile tells formats by their content)."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in AUDIO_SUFFIXES else ""


def public(message: str, path: Path, filename: str) -> str:
    """A message about the upload at `path` with the server's temporary path replaced by the
    client's file name."""
    return message.replace(str(path), filename).replace(str(path.parent), "upload")


def response_body(rows, label_names: List[str], filename: str, path: Path) -> Dict[str, Any]:
    """The JSON answer for one upload's table rows (swrr-predict's columns); RequestError when
    nothing could be scored or a result is not finite."""
    scored = rows[rows["kind"] != "file-mean"]
    mean = rows[rows["kind"] == "file-mean"]
    failed = scored[scored["error"] != ""]
    if len(failed) == len(scored):
        reason = failed["error"].iloc[0]
        if reason == NO_TEXT:  # (its words name swrr-predict's flags)
            reason = "no transcript: this model reads text; send it in the 'text' field (or asr=true, with --asr)"
        raise RequestError(422, f"{filename}: {public(reason, path, filename)}")

    def values(row) -> Dict[str, Any]:
        if label_names:
            probabilities = {name: float(row[f"prob_{name}"]) for name in label_names}
            if not all(math.isfinite(p) for p in probabilities.values()):
                raise RequestError(500, f"{filename}: the model's output is not finite; nothing is reported")
            return {"label": row["label"], "probabilities": probabilities}
        if not math.isfinite(float(row["score"])):
            raise RequestError(500, f"{filename}: the model's output is not finite; nothing is reported")
        return {"score": float(row["score"])}

    first = scored.iloc[0]
    body: Dict[str, Any] = {"file": filename, "transcript": first["transcript"], "text_source": first["text_source"],
                            "notes": [n for n in str(first["notes"]).split("; ") if n]}
    if (scored["kind"] == "segment").any():  # a long upload: its timeline and the file mean
        body.update(values(mean.iloc[0]))
        body["segments"] = [{"start": float(r["start"]), "end": float(r["end"]), **values(r),
                             "transcript": r["transcript"], "error": public(r["error"], path, filename)}
                            if not r["error"] else {"start": float(r["start"]), "end": float(r["end"]),
                                                    "error": public(r["error"], path, filename)}
                            for _, r in scored.iterrows()]
        body["notes"] = [str(mean.iloc[0]["notes"])]
    else:
        body.update(values(first))
    return body


async def read_upload(request, config: ServeConfig) -> Tuple[bytes, str, Dict[str, Any]]:
    """(the file's bytes, the client's file name, the other fields) of a POST /predict; RequestError
    for a wrong content type, a missing or oversized body, bad multipart or missing/unknown fields."""
    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        raise RequestError(415, f"POST /predict takes multipart/form-data (a 'file' field with the audio, optional "
                                f"'text'), got content type {kind[:60] or 'none'!r}")
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise RequestError(411, "the request has no Content-Length; send the upload with its length")
    limit = int(config.max_upload_mb * 1024 * 1024)
    if int(length) > limit:
        raise RequestError(413, f"the upload is {int(length) / 2 ** 20:.1f} MB; this server takes at most "
                                f"{config.max_upload_mb:g} MB (--max-upload-mb)")
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_files=1, max_fields=len(FIELDS))
    except MultiPartException as exc:
        raise RequestError(400, f"the multipart body cannot be read ({exc.message})") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or malformed body in any other way
        raise RequestError(400, f"the multipart body cannot be read ({type(exc).__name__})") from None
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown form field(s) {', '.join(repr(u[:40]) for u in unknown)}; POST /predict "
                                f"reads {', '.join(FIELDS)}")
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise RequestError(400, "missing the 'file' field: upload the audio as a file part named 'file'")
    data = await upload.read()
    name = Path(upload.filename or "upload").name[:120] or "upload"
    if not data:
        raise RequestError(400, f"{name}: the uploaded file is empty")
    fields = {k: form.get(k) for k in FIELDS[1:]}
    if fields["text"] is not None and not isinstance(fields["text"], str):
        raise RequestError(400, "the 'text' field must be text, not a file")
    return data, name, fields


# ------------------------------------------------------------------------------ the app
def create_app(config: ServeConfig, recognizer=None):
    """The FastAPI app serving `recognizer` (loaded from config.model when None)."""
    fastapi = require("serve", "fastapi")
    require("serve", "multipart")  # python-multipart: starlette's form parser
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if recognizer is None:
        from swrr.predict.recognizer import EmotionRecognizer

        recognizer = EmotionRecognizer.from_pretrained(config.model, config.fold, config.device,
                                                       audio_encoder=config.audio_encoder,
                                                       text_encoder=config.text_encoder, workers=config.workers)
    bundle = recognizer.predictor.bundle
    model_info = json_safe({"config": read_config(bundle.path), "card": (bundle.path / CARD).read_text()
                            if (bundle.path / CARD).is_file() else ""})
    state: Dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = batcher = Batcher(recognizer, config)
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = fastapi.FastAPI(title="swrr-serve", version=_version(), lifespan=lifespan,
                          description="Speech + text emotion recognition with a trained swrr model. "
                                      "POST an audio file (and its transcript) to /predict.")

    def error(status: int, message: str, headers=None):
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def request_error(_, exc: RequestError):
        return error(exc.status, str(exc), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_, exc):
        return error(500, f"internal error ({type(exc).__name__}); the server goes on serving")

    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def bearer_token(request, call_next):
        if config.api_key and request.url.path != "/health" and request.method != "OPTIONS":
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, f"Bearer {config.api_key}".encode()):  # (constant time)
                return error(401, "missing or wrong API key: send 'Authorization: Bearer <key>' (swrr-serve "
                                  "--api-key)", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.get("/health")
    async def health():
        batcher = state["batcher"]
        return {"status": "ok", "queued": batcher.queue.qsize(), "max_queue": config.max_queue,
                "batches": batcher.batches, "served": batcher.served}

    @app.get("/model")
    async def model():
        return model_info

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("swrr.predict").joinpath("static/index.html").read_text("utf-8"))

    @app.post("/predict", openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "the audio (wav, flac, ogg, mp3, ...)"},
            "text": {"type": "string", "description": "its transcript (models that read text need it, or asr)"},
            "asr": {"type": "boolean", "description": "transcribe it (server started with --asr MODEL)"},
            "calibration": {"type": "boolean", "description": "false: the raw softmax (default true)"},
            "abstain_below": {"type": "number", "description": "label 'abstain' under this top probability"}}}}}}})
    async def predict(request: fastapi.Request):
        """Score one upload: label and class probabilities (or a score), transcript and its source,
        notes; a long file also its timeline (segments) and the file mean."""
        started = time.perf_counter()
        data, name, fields = await read_upload(request, config)
        asr = _form_flag(fields["asr"], "asr", False)
        if asr and not config.asr:
            raise RequestError(400, "asr=true, but this server was started without --asr MODEL")
        options = (config.asr if asr else None, _form_flag(fields["calibration"], "calibration", True),
                   _form_probability(fields["abstain_below"]))
        folder = Path(tempfile.mkdtemp(prefix="swrr-serve-"))  # private (mode 0700)
        future = asyncio.get_running_loop().create_future()
        queued = False
        try:
            path = folder / (UPLOAD_NAME + upload_suffix(name))
            path.write_bytes(data)
            duration = _check_audio(path, name, config)
            job = Job(folder, path, fields["text"], options, future)
            state["batcher"].submit(job)
            queued = True  # from here on the batcher removes the folder
            try:
                rows = await asyncio.wait_for(asyncio.shield(future), config.request_timeout)
            except asyncio.TimeoutError:
                future.cancel()  # the batcher skips it, or drops its result
                raise RequestError(504, f"{name}: not answered within {config.request_timeout:g} s "
                                        "(--request-timeout); the server is overloaded or the upload too long") from None
            except SwrrError as exc:
                raise RequestError(422, f"{name}: {public(str(exc), path, name)}") from None
        finally:
            if not queued:
                shutil.rmtree(folder, ignore_errors=True)
        body = response_body(rows, recognizer.label_names, name, path)
        body.update(duration=duration, batch_size=job.batch_size, seconds=round(time.perf_counter() - started, 4))
        return body

    return app


def _check_audio(path: Path, name: str, config: ServeConfig) -> float:
    """Refuse what is not audio, or too long, before it takes a place in the queue; -> its seconds."""
    try:
        info = probe_audio(path)
    except AudioError as exc:
        raise RequestError(422, f"{name}: {exc.reason}" + (f" ({public(exc.detail, path, name)})"
                                                           if exc.detail else "")) from None
    if info.duration > config.max_audio_seconds:
        raise RequestError(413, f"{name}: {info.duration:.0f} s of audio; this server takes at most "
                                f"{config.max_audio_seconds:g} s (--max-audio-seconds)")
    return info.duration


def json_safe(value):
    """`value` with every non-finite float as None (JSON has no NaN; a regression bundle's
    constant-prediction Pearson r is one)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def exposure_warning(config: ServeConfig) -> Optional[str]:
    """What to warn about when the server listens beyond this machine without an API key."""
    if config.is_local or config.api_key:
        return None
    return (f"listening on {config.host} without --api-key: anyone who can reach this machine can use the model "
            "(set --api-key KEY, or keep the default --host 127.0.0.1)")


def _version() -> str:
    from swrr._version import __version__

    return __version__


def serve(config: ServeConfig) -> None:
    """Load the model, then serve until interrupted."""
    uvicorn = require("serve", "uvicorn")
    app = create_app(config)
    warning = exposure_warning(config)
    if warning:
        logger.warning(f"WARNING: {warning}")
    logger.info(f"serving {config.model} on http://{config.host}:{config.port}/ (API docs at /docs)")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_keep_alive=5)


# ------------------------------------------------------------------------------ command line
def _cli():
    import click

    from swrr.cli import CONTEXT, OneLineErrors

    defaults = ServeConfig(model="")

    def limit(name: str, kind, help: str):
        """A numeric option of ServeConfig field `name`, its default shown."""
        return click.option(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                            show_default=True, help=help)

    @click.command("swrr-serve", cls=OneLineErrors, context_settings=CONTEXT)
    @click.option("--model", required=True, help="A model bundle folder, a run folder (with --fold when it has "
                                                 "several folds) or a hub id, as for swrr-predict.")
    @click.option("--fold", type=click.IntRange(min=1), help="Which fold's model of a run folder (1-based).")
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
    @click.option("--host", default=defaults.host, show_default=True,
                  help="Address to listen on. Anything but localhost prints a warning unless --api-key is set.")
    @click.option("--port", type=click.IntRange(0, 65535), default=defaults.port, show_default=True)
    @click.option("--api-key", help="Require 'Authorization: Bearer KEY' on every route but /health "
                                    "(also read from the SWRR_API_KEY environment variable).",
                  envvar="SWRR_API_KEY")
    @click.option("--cors", multiple=True, metavar="ORIGIN",
                  help="Let web pages from ORIGIN (e.g. https://example.org) call the API; repeatable. Default: none.")
    @click.option("--asr", help="ASR model (hub id or folder) for requests with asr=true.")
    @click.option("--segment", type=click.Choice(SEGMENT_MODES), default=defaults.segment, show_default=True,
                  help="Uploads longer than the model's span: as swrr-predict --segment (vad, window, none).")
    @limit("max_upload_mb", float, "Larger request bodies are refused with 413.")
    @limit("max_audio_seconds", float, "Longer audio is refused with 413.")
    @limit("request_timeout", float, "Seconds a request may take (queue + scoring); then 504.")
    @limit("max_queue", int, "Uploads that may wait to be scored; more get 503 with Retry-After.")
    @limit("max_batch", int, "Uploads scored together in one forward (micro-batching).")
    @limit("batch_wait_ms", float, "How long the first upload of a batch waits for others to join it.")
    @click.option("--audio-encoder", help="A local copy of the audio encoder the model's recipe names.")
    @click.option("--text-encoder", help="A local copy of the text encoder the model's recipe names.")
    def main(**options):
        """Serve a trained swrr model over HTTP: POST /predict (multipart: file, text), GET /health,
        GET /model, OpenAPI docs at /docs and a page to try it at /. Needs the extra swrr[serve].

        \b
        Example:
          swrr-serve --model runs/demo-split
          curl -F file=@clip.wav -F text="what was said" http://127.0.0.1:8000/predict
        """
        serve(ServeConfig(**{**options, "cors": tuple(options["cors"])}))

    return main


def main(argv=None):
    _cli()(argv)


if __name__ == "__main__":
    main()
