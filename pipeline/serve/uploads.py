"""msa-serve's inputs: a multipart upload streamed to a private folder, or a path under an allowed root.

The upload's size is checked while it streams (and up front from Content-Length), so a too-large
file is refused before it fills the disk. The client's file name is only displayed: the file is
stored in a fresh folder under a sanitised name with a media extension, and nothing from a request
is ever executed or unpickled.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, AsyncIterator

from msa.core.errors import MsaError
from msa.pipeline.extract.sources import MEDIA_EXTS

FIELD_LIMIT = 64 * 1024  # bytes of a form field that is not the file (bundle name, transcript)
FILE_FIELD = "file"
# msa-extract's media extensions and a few that phones write; no extension: the probe decides. Others
# are refused: ffmpeg would read a .txt as ANSI-art "video", and the Predictor takes a .txt as a transcript.
EXTS = (*MEDIA_EXTS, ".m4a", ".m4v", ".3gp", ".ogg", ".opus", ".mpeg")


class RequestError(MsaError):
    """A request msa-serve refuses: ``status`` is the HTTP status, ``reason`` a stable code."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.status = status


@dataclass
class Upload:
    """What a multipart request carried: the stored clip (None when no file part) and the text fields."""

    clip: Path | None = None
    name: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


def display_name(filename: str) -> str:
    """The last component of a client's file name (either slash), at most 200 characters."""
    name = PureWindowsPath(PurePosixPath(filename).name).name.strip()
    return name[-200:] or "upload"


def stored_stem(name: str) -> str:
    """The file name an upload is stored under: the client's stem in letters, digits, ``-_.`` only (its
    plot is titled with it), never a hidden file."""
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(name)[0], flags=re.ASCII).lstrip(".")[:100]
    return stem or "clip"


def media_suffix(name: str) -> str:
    """The lower-case media extension of ``name`` ('' for none); RequestError 415 for any other."""
    ext = os.path.splitext(name)[1].lower()
    if ext and ext not in EXTS:
        raise RequestError(f"{name}: not a media file (expected {' '.join(e[1:] for e in EXTS)})", status=415,
                           reason="not_media")
    return ext


def too_large(max_bytes: int) -> RequestError:
    return RequestError(f"upload larger than the {max_bytes / 2**20:g} MB limit (msa-serve --max-upload-mb)",
                        status=413, reason="too_large")


async def receive_upload(headers: Any, chunks: AsyncIterator[bytes], folder: Path, max_bytes: int) -> Upload:
    """Stream a ``multipart/form-data`` body: the ``file`` part to ``folder/clip<ext>``, other parts as text.

    RequestError (413) as soon as the file passes ``max_bytes``; the partial file is the caller's
    to delete with ``folder``."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise RequestError("expected multipart/form-data with a 'file' part", status=415, reason="bad_request")
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + FIELD_LIMIT:
        raise too_large(max_bytes)

    up = Upload()
    part: dict[str, Any] = {}
    header: list[bytes] = [b"", b""]
    state: dict[str, Any] = {"error": None}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, name="", data=bytearray(), file=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        part["headers"][header[0].decode("latin-1").lower()] = header[1]
        header[0] = header[1] = b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(part["headers"].get("content-disposition", b""))
        part["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if part["name"] == FILE_FIELD and filename is not None:
            if up.clip is not None:
                state["error"] = RequestError("send one 'file' part per request", status=400, reason="bad_request")
                return
            up.name = display_name(filename.decode("utf-8", "replace"))
            try:
                up.clip = folder / (stored_stem(up.name) + media_suffix(up.name))
            except RequestError as e:
                state["error"] = e
                return
            part["file"] = open(up.clip, "xb")  # noqa: SIM115 - closed in on_part_end / finally

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["error"] is not None:
            return
        if part["file"] is not None:
            up.size += end - start
            if up.size > max_bytes:
                state["error"] = too_large(max_bytes)
                return
            part["file"].write(data[start:end])
        else:
            part["data"] += data[start:end]
            if len(part["data"]) > FIELD_LIMIT:
                state["error"] = RequestError(f"form field {part['name']!r} is over {FIELD_LIMIT // 1024} KB",
                                              status=413, reason="too_large")

    def on_part_end() -> None:
        if part.get("file") is not None:
            part["file"].close()
            part["file"] = None
        elif part.get("name") and state["error"] is None:
            up.fields[part["name"]] = part["data"].decode("utf-8", "replace")

    parser = MultipartParser(boundary, {  # type: ignore[arg-type]
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished})
    try:
        async for chunk in chunks:
            parser.write(chunk)
            if state["error"] is not None:
                raise state["error"]
        parser.finalize()
    except RequestError:
        raise
    except Exception as e:  # noqa: BLE001 - python-multipart's parse errors: a bad request, one line
        raise RequestError(f"malformed multipart body ({' '.join(str(e).split())[:200]})", status=400,
                           reason="bad_request") from e
    finally:
        if part.get("file") is not None:
            part["file"].close()
    if up.clip is None:
        raise RequestError("no 'file' part in the form (send the clip as file=@clip.mp4)", status=400,
                           reason="bad_request")
    if up.size == 0:
        raise RequestError(f"{up.name}: empty file (0 bytes)", status=415, reason="corrupt_media")
    return up


def path_under(root: Path | None, given: Any) -> Path:
    """The file ``given`` names inside ``root`` (relative to it, or absolute within it).

    RequestError 403 when path inputs are off, the path has a ``..`` component or it resolves
    (symbolic links followed) outside ``root``; 404 when there is no such file."""
    if root is None:
        raise RequestError("path inputs are off; start msa-serve with --allow-root DIR to allow them",
                           status=403, reason="outside_root")
    if not isinstance(given, str) or not given.strip() or "\x00" in given:
        raise RequestError("'path' must be a non-empty string", status=400, reason="bad_request")
    if ".." in PurePosixPath(given).parts or ".." in PureWindowsPath(given).parts:
        raise RequestError(f"{given}: '..' is not allowed in a path", status=403, reason="outside_root")
    root = root.resolve()
    path = (root / given).resolve()  # an absolute ``given`` replaces root here, and is checked below
    if not path.is_relative_to(root):
        raise RequestError(f"{given}: outside the allowed root", status=403, reason="outside_root")
    if not path.is_file():
        raise RequestError(f"{given}: no such file under the allowed root", status=404, reason="not_found")
    media_suffix(given)
    return path
