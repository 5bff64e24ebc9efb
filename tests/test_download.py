"""``pevl download-weights``: checksum-verified, cached, resumable downloads, tested against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import random
import re
import socket
import threading
from pathlib import Path

import pytest

from pevl.cli import main
from pevl.errors import PevlError
from pevl.hub.download import (
    OPENAI_URLS,
    cached_weights_path,
    canonical_arch,
    default_cache_dir,
    download_weights,
    expected_sha256,
    resolve_pretrained,
)

PAYLOAD = random.Random(0).randbytes(300_000)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """A local HTTP server with ``Range`` support that can also cut a transfer short or ignore ranges."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []  # the Range header of every request, in order
        self.cut_after: int | None = None
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = server.files.get(self.path)
                server.ranges.append(self.headers.get("Range"))
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if server.cut_after is None else body[: server.cut_after])

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    srv = FileServer()
    srv.files[f"/{SHA256}/ViT-B-16.pt"] = PAYLOAD
    srv.files["/mirror/ViT-B-16.pt"] = PAYLOAD
    yield srv
    srv.close()


@pytest.fixture()
def url(server):
    return server.url(f"/{SHA256}/ViT-B-16.pt")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_full_download_is_verified_and_lands_in_the_cache(tmp_path, server, url):
    path = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    assert path == tmp_path / "clip" / "ViT-B-16.pt" == cached_weights_path("ViT-B/16", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert files_in(tmp_path) == ["ViT-B-16.pt"]  # no partial file left behind
    assert server.ranges == [None]


def test_a_partial_file_is_resumed_with_a_range_request(tmp_path, server, url):
    part = tmp_path / "clip" / "ViT-B-16.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:100_000])
    path = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    assert server.ranges == ["bytes=100000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_an_interrupted_download_keeps_its_part_and_the_next_run_finishes_it(tmp_path, server, url):
    server.cut_after = 120_000
    with pytest.raises(PevlError, match="run the same command again to resume") as err:
        download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    assert "\n" not in str(err.value)
    assert files_in(tmp_path) == ["ViT-B-16.pt.part"]
    assert (tmp_path / "clip" / "ViT-B-16.pt.part").stat().st_size == 120_000
    server.cut_after = None
    path = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=True)
    assert server.ranges == [None, "bytes=120000-"]
    assert path.read_bytes() == PAYLOAD
    assert files_in(tmp_path) == ["ViT-B-16.pt"]


def test_a_complete_part_file_is_verified_and_renamed(tmp_path, server, url):
    part = tmp_path / "clip" / "ViT-B-16.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)  # e.g. the process died between the last byte and the rename
    path = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert path.read_bytes() == PAYLOAD


def test_a_server_without_range_support_makes_the_download_start_over(tmp_path, server, url):
    server.ignore_range = True
    part = tmp_path / "clip" / "ViT-B-16.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 5000)
    path = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_a_checksum_mismatch_deletes_the_download(tmp_path, server):
    wrong = "0" * 64
    server.files[f"/{wrong}/ViT-B-16.pt"] = PAYLOAD
    with pytest.raises(PevlError, match=f"SHA-256 mismatch: expected {wrong}, got {SHA256}"):
        download_weights("ViT-B/16", cache_dir=tmp_path, url=server.url(f"/{wrong}/ViT-B-16.pt"), progress=False)
    assert files_in(tmp_path) == []


def test_a_url_without_checksum_is_checked_against_openai_s(tmp_path, server):
    official = OPENAI_URLS["ViT-B/16"].split("/")[-2]
    assert expected_sha256("ViT-B/16", server.url("/mirror/ViT-B-16.pt")) == official
    with pytest.raises(PevlError, match=f"expected {official}"):
        download_weights("ViT-B/16", cache_dir=tmp_path, url=server.url("/mirror/ViT-B-16.pt"), progress=False)
    assert files_in(tmp_path) == []


def test_a_cached_file_is_returned_without_any_request(tmp_path, server, url):
    first = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    again = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    assert first == again and server.ranges == [None]


def test_a_corrupted_cached_file_is_downloaded_again(tmp_path, server, url):
    path = download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    path.write_bytes(b"bit rot")
    with pytest.warns(UserWarning, match="SHA-256 mismatch"):
        download_weights("ViT-B/16", cache_dir=tmp_path, url=url, progress=False)
    assert path.read_bytes() == PAYLOAD and server.ranges == [None, None]


def test_http_and_connection_errors_are_one_line(tmp_path, server):
    with pytest.raises(PevlError, match="HTTP 404"):
        download_weights("ViT-B/16", cache_dir=tmp_path, url=server.url(f"/{SHA256}/missing.pt"), progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(PevlError, match="cannot connect"):
        download_weights("ViT-B/16", cache_dir=tmp_path, url=f"http://127.0.0.1:{closed_port}/x.pt", progress=False)
    assert files_in(tmp_path) == []


def test_unknown_architectures_are_refused_with_the_known_ones():
    with pytest.raises(PevlError, match=r"'RN50'.*ViT-B/32, ViT-B/16, ViT-L/14"):
        download_weights("RN50")


def test_architecture_spellings():
    assert canonical_arch("ViT-B/16") == canonical_arch("vit-b-16") == canonical_arch("ViT-B-16.pt") == "ViT-B/16"
    assert canonical_arch("ViT-L/14@336px") == canonical_arch("ViT-L-14-336px") == "ViT-L/14@336px"
    assert canonical_arch("ViT-L/14") == "ViT-L/14"
    assert canonical_arch("ViT-H/14") is None and canonical_arch("weights.pt") is None


def test_the_cache_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PEVL_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    assert cached_weights_path("ViT-L/14") == tmp_path / "cache" / "clip" / "ViT-L-14.pt"
    monkeypatch.delenv("PEVL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pevl"


def test_resolve_pretrained_points_at_the_command_until_the_file_is_there(monkeypatch, tmp_path, url):
    monkeypatch.setenv("PEVL_CACHE", str(tmp_path))
    with pytest.raises(PevlError, match=r"run `pevl download-weights ViT-B/16`"):
        resolve_pretrained("ViT-B/16")
    path = download_weights("ViT-B/16", url=url, progress=False)
    assert resolve_pretrained("ViT-B/16") == resolve_pretrained("ViT-B-16") == path
    assert resolve_pretrained(str(path)) == path  # a path is a path
    with pytest.raises(PevlError, match="no such file") as err:
        resolve_pretrained(str(tmp_path / "nowhere.pt"))
    assert str(tmp_path / "nowhere.pt") in str(err.value)


def test_the_command_prints_the_path_and_reports_errors(tmp_path, url, capsys):
    assert main(["download-weights", "ViT-B/16", "--cache-dir", str(tmp_path), "--url", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == str(tmp_path / "clip" / "ViT-B-16.pt")
    assert main(["download-weights", "ViT-X/99", "--cache-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("pevl: error: unknown CLIP architecture 'ViT-X/99'")


def test_a_local_copy_can_be_installed_with_a_file_url(tmp_path):
    copy = tmp_path / "downloads" / SHA256 / "ViT-B-16.pt"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(PAYLOAD)
    part = tmp_path / "cache" / "clip" / "ViT-B-16.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale")  # file URLs know no ranges: the copy starts over
    path = download_weights("ViT-B/16", cache_dir=tmp_path / "cache", url=copy.as_uri(), progress=False)
    assert path.read_bytes() == PAYLOAD and not part.exists()
