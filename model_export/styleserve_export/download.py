"""Streams a weight file over HTTP into a cache, resuming or retrying when the connection drops.

Weight files are hundreds of megabytes: the download shows progress, lands in a ``.part``
file that only becomes the real name once complete and hash-checked, and continues where it
stopped (HTTP Range) when the server allows it, else starts over.
"""

from __future__ import annotations

import errno
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from styleserve_export.artifact import file_sha256
from styleserve_export.errors import ExportError

__all__ = ["download"]

_CHUNK = 1 << 20
# Local write failures: retrying the network cannot fix them.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES}


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``; raises on a dropped or short transfer."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            part.open("ab" if resumed else "wb") as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=None,  # no bar when stderr is not a terminal (logs, CI)
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(
    url: str, dest: Path, sha256_prefix: str, *, attempts: int = 4, timeout: float = 60.0
) -> str:
    """Download ``url`` to ``dest`` unless already there; returns the file's sha256.

    The file must hash to a value starting with ``sha256_prefix`` (torchvision's convention of
    putting the hash's first digits in the file name); a mismatch deletes it.
    """
    if dest.is_file():
        digest = file_sha256(dest)
        if digest.startswith(sha256_prefix):
            return digest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(attempts):
        try:
            _fetch_once(url, part, timeout)
            break
        except urllib.error.HTTPError as err:
            if err.code == 416:  # our .part is not a prefix the server recognises: start over
                part.unlink(missing_ok=True)
            elif err.code < 500:
                raise ExportError(
                    f"{url} answered HTTP {err.code} {err.reason}: check the URL, or download "
                    "the file yourself and run `styleserve-export --source file:PATH`"
                ) from err
            last_error = err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
                raise
            last_error = err
        if attempt + 1 < attempts:
            time.sleep(min(0.25 * 2.0**attempt, 5.0))
    else:
        raise ExportError(
            f"downloading {url} failed {attempts} times (last: {last_error}); the partial file "
            f"{part} is kept and the next run resumes it: check the network or proxy, or "
            "download the file yourself and run `styleserve-export --source file:PATH`"
        )
    digest = file_sha256(part)
    if not digest.startswith(sha256_prefix):
        part.unlink()
        raise ExportError(
            f"{url} has sha256 {digest}, expected one starting with {sha256_prefix} (corrupt or "
            "tampered download, deleted): retry, or check what serves that URL"
        )
    os.replace(part, dest)
    return digest
