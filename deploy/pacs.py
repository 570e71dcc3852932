"""The Deploy app in a hospital's flow: pull a study from a PACS, analyse it, send the findings back to the PACS.

::

    python deploy/pacs.py --pacs http://127.0.0.1:8042/dicom-web --study <StudyInstanceUID> \
        -m bundle -o <output folder> [-w <work folder>] [--send stow | --send c-store --dicom 127.0.0.1:4242 \
        --called-aet ORTHANC --calling-aet AASNDEPLOY]

1. **Pull**: WADO-RS ``GET <pacs>/studies/<uid>`` (every instance, in the transfer syntax the PACS stored) into
   ``<output>/input/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
2. **Analyse**: ``deploy/app.py -i <output>/input -o <output> -m <model> [-w <work>]`` as a process, unchanged (the
   SR ``sr_<source SOP Instance UID>.dcm``, the Secondary Capture ``sc_<...>.dcm`` and ``aasn_summary.json``).
3. **Send back**: the SR and SC files, by STOW-RS (``POST <pacs>/studies``, default) or by DICOM C-STORE
   (pynetdicom) to ``--dicom host:port``. They carry the source's Patient and Study modules, so the PACS files them
   into the analysed study.
4. ``<output>/pacs_sent.json`` lists what was sent (SOP class, SOP instance, series, study) and how.

Exit code 0 when everything was sent (also when the study held no AP pelvic radiograph: nothing to send), 1 when
the study could not be pulled, the app failed, or the PACS refused an instance (the message says which).

HTTP basic authentication: set ``AASN_PACS_USERNAME`` and ``AASN_PACS_PASSWORD``. Proxies come from the environment
as for any ``urllib`` client (``http_proxy``, ``no_proxy``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pydicom

APP = Path(__file__).resolve().parent / "app.py"
SENT_FILE = "pacs_sent.json"
STOW, CSTORE = "stow", "c-store"

logger = logging.getLogger("aasn.pacs")


class PACSError(RuntimeError):
    """The PACS could not be reached, or refused or failed a request (the message says which and why)."""


# --- DICOMweb --------------------------------------------------------------------------------------------------


def _headers(extra: dict | None = None) -> dict:
    headers = dict(extra or {})
    user, password = os.environ.get("AASN_PACS_USERNAME"), os.environ.get("AASN_PACS_PASSWORD")
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return headers


def _open(request: urllib.request.Request, what: str, timeout: float) -> tuple[bytes, str]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        raise PACSError(f"{what}: HTTP {e.code} {e.read()[:500]!r}") from e
    except (urllib.error.URLError, OSError) as e:
        raise PACSError(f"{what}: {e}") from e


def retrieve_study(pacs: str, study_uid: str, folder: str | os.PathLike, timeout: float = 300) -> list[Path]:
    """WADO-RS: every instance of a study as DICOM files under ``folder/<SeriesInstanceUID>/``."""
    url = f"{pacs.rstrip('/')}/studies/{study_uid}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    body, content_type = _open(
        urllib.request.Request(url, headers=_headers({"Accept": accept})), f"WADO-RS {url}", timeout
    )
    if not content_type.lower().startswith("multipart/related"):
        raise PACSError(f"WADO-RS {url}: expected multipart/related, got {content_type!r}")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    files = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        ds = pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True)
        path = Path(folder) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        files.append(path)
    if not files:
        raise PACSError(f"WADO-RS {url}: the study has no instance")
    return files


def store_stow(pacs: str, files: list[Path], timeout: float = 300) -> list[str]:
    """STOW-RS: store DICOM files in one request; the SOP Instance UIDs the PACS accepted (all, or ``PACSError``)."""
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + Path(f).read_bytes() + b"\r\n"
            for f in files
        )
        + f"--{boundary}--\r\n".encode()
    )
    url = f"{pacs.rstrip('/')}/studies"
    headers = _headers(
        {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
    )
    answer, _ = _open(urllib.request.Request(url, data=body, method="POST", headers=headers), f"STOW-RS {url}", timeout)
    result = json.loads(answer) if answer.strip() else {}
    failed = result.get("00081198", {}).get("Value", [])  # Failed SOP Sequence
    if failed:
        reasons = [
            (f.get("00081155", {}).get("Value", ["?"])[0], f.get("00081197", {}).get("Value", ["?"])[0]) for f in failed
        ]
        raise PACSError(
            f"STOW-RS {url}: the PACS refused {len(failed)} instance(s) (SOP Instance UID, reason): {reasons}"
        )
    accepted = [r.get("00081155", {}).get("Value", [""])[0] for r in result.get("00081199", {}).get("Value", [])]
    missing = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files} - set(accepted)
    if missing:
        raise PACSError(f"STOW-RS {url}: the PACS did not confirm {sorted(missing)}")
    return accepted


# --- DIMSE -----------------------------------------------------------------------------------------------------


def store_cstore(
    files: list[Path], host: str, port: int, called_aet: str, calling_aet: str, timeout: float = 60
) -> list[str]:
    """C-STORE (pynetdicom) of DICOM files in one association; the SOP Instance UIDs stored (all, or ``PACSError``)."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntax in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}):
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        raise PACSError(f"C-STORE to {called_aet}@{host}:{port} as {calling_aet}: association rejected or aborted")
    stored = []
    try:
        for path, ds in zip(files, datasets):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != 0x0000:
                raise PACSError(
                    f"C-STORE of {path} to {called_aet}@{host}:{port}: status "
                    f"{'no answer' if code is None else hex(code)}"
                )
            stored.append(str(ds.SOPInstanceUID))
    finally:
        assoc.release()
    return stored


# --- the flow --------------------------------------------------------------------------------------------------


def run_app(input_dir: Path, output_dir: Path, model: str, workdir: str | None) -> None:
    command = [sys.executable, str(APP), "-i", str(input_dir), "-o", str(output_dir), "-m", str(model)]
    if workdir:
        command += ["-w", str(workdir)]
    logger.info("Running %s", " ".join(command))
    result = subprocess.run(command)
    if result.returncode != 0:
        raise RuntimeError(f"the app exited with {result.returncode} ({' '.join(command)})")


def analyse_study(args: argparse.Namespace) -> dict:
    output = Path(args.output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"Output folder {output} is not empty: the findings sent are the files of this run only.")
    output.mkdir(parents=True, exist_ok=True)
    pulled = retrieve_study(args.pacs, args.study, output / "input")
    logger.info("Pulled %d instance(s) of study %s from %s", len(pulled), args.study, args.pacs)
    run_app(output / "input", output, args.model, args.workdir)
    findings = sorted(output.glob("sr_*.dcm")) + sorted(output.glob("sc_*.dcm"))
    if not findings:
        logger.info("Nothing to send: %s", json.loads((output / "aasn_summary.json").read_text()).get("message"))
    elif args.send == STOW:
        store_stow(args.pacs, findings)
    else:
        host, _, port = args.dicom.rpartition(":")
        store_cstore(findings, host, int(port), args.called_aet, args.calling_aet)
    sent = []
    for path in findings:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sent.append(
            {
                "file": path.name,
                "sop_class_uid": str(ds.SOPClassUID),
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "series_instance_uid": str(ds.SeriesInstanceUID),
                "study_instance_uid": str(ds.StudyInstanceUID),
            }
        )
    record = {
        "pacs": args.pacs,
        "study_instance_uid": args.study,
        "pulled_instances": len(pulled),
        "method": args.send if findings else None,
        "destination": (args.pacs if args.send == STOW else f"{args.called_aet}@{args.dicom}") if findings else None,
        "sent": sent,
    }
    (output / SENT_FILE).write_text(json.dumps(record, indent=2))
    logger.info("Sent %d instance(s) to %s by %s", len(sent), record["destination"], record["method"])
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pacs", required=True, help="DICOMweb root of the PACS, e.g. http://127.0.0.1:8042/dicom-web")
    parser.add_argument("--study", required=True, help="StudyInstanceUID of the study to analyse")
    parser.add_argument("-m", "--model", required=True, help="the bundle folder (or a TorchScript file in its models/)")
    parser.add_argument("-o", "--output", required=True, help="output folder (new or empty): input/, SR, SC, summary")
    parser.add_argument("-w", "--workdir", help="keep the bundle's per-image outputs (report.json, heatmap) here")
    parser.add_argument("--send", choices=(STOW, CSTORE), default=STOW, help="how the SR and SC go back (default stow)")
    parser.add_argument("--dicom", default="127.0.0.1:4242", help="host:port of the PACS' DICOM service (c-store)")
    parser.add_argument("--called-aet", default="ORTHANC", help="the PACS' AE title (c-store)")
    parser.add_argument(
        "--calling-aet", default="AASNDEPLOY", help="this sender's AE title, as the PACS knows it (c-store)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        analyse_study(args)
    except (PACSError, RuntimeError, FileExistsError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
