"""A real Orthanc PACS with its DICOMweb plugin for the tests: started on 127.0.0.1 on free ports, stopped afterwards.

:class:`OrthancServer` writes a configuration JSON into a temporary folder (storage and index there too), starts
the ``Orthanc`` executable of the Debian packages ``orthanc`` and ``orthanc-dicomweb`` in its own process group,
waits until its REST API and DICOMweb root answer, and stops the whole group on :meth:`stop` (also used as a
context manager). Every URL it builds names 127.0.0.1.

Orthanc 1.10 has no bind-address option: on its own, its HTTP and DICOM ports listen on all interfaces. The tests
start it with ``tests/loopback_bind.c`` preloaded (compiled here with ``cc``), which turns its wildcard binds into
binds to 127.0.0.1, so both ports listen on the loopback interface only (:func:`listening_addresses` checks it).
The configuration closes them further, as Orthanc allows: ``RemoteAccessAllowed: false`` (HTTP answers loopback
clients only), and C-STORE and C-ECHO are accepted only from the modality registered at 127.0.0.1
(``DicomAlwaysAllowStore: false``, ``DicomCheckModalityHost: true``).

The small HTTP helpers (STOW-RS upload, QIDO-RS search, WADO-RS retrieval, REST) use the standard library only,
so they work in every virtualenv of the project.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

LOOPBACK = "127.0.0.1"
#: Where Debian's packages put the server and the DICOMweb plugin (overridable with the environment variables).
ORTHANC_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
#: The AE title of the test's own DICOM client (the only modality Orthanc accepts C-STORE from).
CLIENT_AET = "AASNDEPLOY"
START_TIMEOUT_S = 60
#: Requests go straight to 127.0.0.1, never through a proxy of the environment (http_proxy, ...).
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed here."""


def find_orthanc() -> tuple[str, str]:
    """``(Orthanc executable, DICOMweb plugin)``; :class:`OrthancUnavailable` saying what is missing otherwise.

    ``ORTHANC_BINARY`` and ``ORTHANC_DICOMWEB_PLUGIN`` override the Debian locations.
    """
    binary = os.environ.get("ORTHANC_BINARY") or shutil.which("Orthanc")
    binary = binary or next((p for p in ORTHANC_CANDIDATES if os.access(p, os.X_OK)), None)
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN") or next(
        (p for p in DICOMWEB_PLUGIN_CANDIDATES if os.path.exists(p)), None
    )
    missing = []
    if not binary or not os.access(binary, os.X_OK):
        missing.append(f"the Orthanc executable (looked for {binary or ', '.join(ORTHANC_CANDIDATES)})")
    if not plugin or not os.path.exists(plugin):
        missing.append(f"its DICOMweb plugin (looked for {plugin or ', '.join(DICOMWEB_PLUGIN_CANDIDATES)})")
    if missing:
        raise OrthancUnavailable(
            "Orthanc is not available: missing "
            + " and ".join(missing)
            + ". Install it as root with `apt-get install orthanc orthanc-dicomweb` (what .ci/run does)."
        )
    return binary, plugin


def build_loopback_shim(folder: str | Path) -> Path:
    """Compile ``tests/loopback_bind.c`` into ``folder``; :class:`OrthancUnavailable` without a C compiler."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OrthancUnavailable(
            "no C compiler (cc) to build tests/loopback_bind.c, which keeps Orthanc's ports on 127.0.0.1 "
            "(Orthanc 1.10 has no bind-address option): install gcc"
        )
    library = Path(folder) / "libloopback_bind.so"
    source = Path(__file__).resolve().parent / "loopback_bind.c"
    result = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {source} failed:\n{result.stdout}{result.stderr}")
    return library


def listening_addresses(port: int) -> set[str]:
    """The local addresses on which a TCP socket listens on ``port`` (IPv4 and IPv6), read from ``/proc/net``."""
    found = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            if family == 4:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four 32-bit words, each in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _die_with_parent() -> None:
    """In the child before exec: on Linux, receive SIGTERM when the process that started it dies (a killed test run
    leaves no Orthanc behind)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class OrthancServer:
    """One Orthanc process with the DICOMweb plugin, its storage in ``workdir``.

    Args:
        workdir: an empty folder for the configuration, the storage, the index and the log.
        aet: Orthanc's AE title.
        client_aet: the AE title of the one DICOM client allowed to store (C-STORE) into it, from 127.0.0.1.
        start_timeout: seconds to wait for the server to answer.
    """

    def __init__(
        self,
        workdir: str | Path,
        aet: str = "AASNPACS",
        client_aet: str = CLIENT_AET,
        start_timeout: float = START_TIMEOUT_S,
    ):
        self.binary, self.plugin = find_orthanc()
        self.workdir = Path(workdir)
        self.aet = aet
        self.client_aet = client_aet
        self.start_timeout = start_timeout
        self.http_port = self.dicom_port = None
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"

    # --- life cycle ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        """The DICOMweb root, as MONAI Label's ``--studies`` and the Deploy wrapper's ``--pacs`` take it."""
        return f"{self.url}/dicom-web"

    def config(self) -> dict:
        storage = self.workdir / "storage"
        return {
            "Name": "aasn-test-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "TemporaryDirectory": str(self.workdir / "tmp"),
            "Plugins": [self.plugin],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpProxy": "",
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {
                "client": {"AET": self.client_aet, "Host": LOOPBACK, "Port": 104, "AllowEcho": True, "AllowStore": True}
            },
            "OrthancPeers": {},
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "DicomThreadsCount": 2,
            # the plugin writes absolute BulkData/Retrieve URLs with this host in its answers
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Host": f"{LOOPBACK}:{self.http_port}",
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }

    def start(self) -> OrthancServer:
        """Start on free ports (a port taken between choosing and binding gives a retry); wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LD_PRELOAD": str(build_loopback_shim(self.workdir))}
        last_error = ""
        for _ in range(3):
            self.http_port, self.dicom_port = free_port(), free_port()
            if self.http_port == self.dicom_port:
                continue
            self.config_path.write_text(json.dumps(self.config(), indent=2))
            with open(self.log_path, "w") as log:
                self.process = subprocess.Popen(
                    [self.binary, str(self.config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            try:
                self._wait_until_ready()
                return self
            except RuntimeError as e:
                last_error = str(e)
                self.stop()
        raise RuntimeError(f"Orthanc did not start in 3 tries: {last_error}")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.request("GET", "/system", timeout=2)
                if status == 200 and self.request("GET", "/dicom-web/studies", timeout=2)[0] == 200:
                    self.system = json.loads(body)
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {self.start_timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server's process group (TERM, then KILL after 20 s); a no-op when it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
            except ProcessLookupError:
                pass
        try:  # anything left in its group
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- HTTP helpers ----------------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60
    ) -> tuple[int, bytes]:
        """``(status, body)`` of a request to ``path`` (below the server's root URL); HTTP errors are returned."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with OPENER.open(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def rest_json(self, method: str, path: str, body: bytes | None = None) -> object:
        status, answer = self.request(method, path, body)
        if status != 200:
            raise RuntimeError(f"Orthanc {method} {path}: HTTP {status} {answer[:300]!r}")
        return json.loads(answer)

    def stow(self, files) -> dict:
        """Upload DICOM files with STOW-RS (one multipart request); the plugin's answer (DICOM JSON)."""
        body, content_type = multipart_related([Path(f).read_bytes() for f in files])
        status, answer = self.request(
            "POST", "/dicom-web/studies", body, {"Content-Type": content_type, "Accept": "application/dicom+json"}
        )
        if status != 200:
            raise RuntimeError(f"STOW-RS to {self.dicomweb}: HTTP {status} {answer[:500]!r}")
        result = json.loads(answer)
        if result.get("00081198", {}).get("Value"):  # Failed SOP Sequence
            raise RuntimeError(f"STOW-RS refused instances: {result['00081198']}")
        return result

    def qido(self, path: str, **query) -> list[dict]:
        """A QIDO-RS search, e.g. ``qido("/studies/<uid>/series", Modality="SR")``: a list of DICOM JSON objects."""
        from urllib.parse import urlencode

        suffix = f"?{urlencode(query)}" if query else ""
        status, answer = self.request("GET", f"/dicom-web{path}{suffix}", headers={"Accept": "application/dicom+json"})
        if status == 204 or not answer.strip():
            return []
        if status != 200:
            raise RuntimeError(f"QIDO-RS {path}: HTTP {status} {answer[:300]!r}")
        return json.loads(answer)

    def wado(self, path: str) -> list[bytes]:
        """A WADO-RS retrieval, e.g. ``wado("/studies/<uid>")``: the instances' DICOM files (Part 10 bytes)."""
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        req = urllib.request.Request(f"{self.dicomweb}{path}", headers={"Accept": accept})
        try:
            with OPENER.open(req, timeout=60) as response:
                return split_multipart(response.read(), response.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WADO-RS {path}: HTTP {e.code} {e.read()[:300]!r}") from e


def multipart_related(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    """A ``multipart/related`` body of DICOM parts (STOW-RS) and its Content-Type header."""
    boundary = uuid.uuid4().hex
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts' payloads of a ``multipart/related`` answer (WADO-RS)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return [part.get_payload(decode=True) for part in message.iter_parts()]
