"""`flowexport upload`: backfill flow-log files (e.g. exported to S3) into a PCE."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from flowexport.commands.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    UsageError,
    add_reading_options,
    read_flow_files,
)
from flowexport.commands.progress import ProgressBar
from flowexport.core.encode import PCE_MAX_BATCH, check_batch_size
from flowexport.core.flows import Flow
from flowexport.pce.client import (
    DEFAULT_RATE_PER_MINUTE,
    BatchResult,
    PCEClient,
    PCECredentials,
    RetryPolicy,
    UploadSummary,
    username_problem,
)
from flowexport.pce.errors import PCEError
from flowexport.urls import check_pce_url

log = logging.getLogger("flowexport.upload")

#: The `external_data_set` that marks workloads this tool created.
EXTERNAL_DATA_SET = "flowexport"


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "upload",
        help="parse flow-log files and upload their flows to a PCE",
        description=(
            "Parse flow-log files (text or Parquet), normalise and aggregate them, and upload "
            "the flows with the PCE's bulk_traffic_flows API. Credentials come from the "
            "environment: PCE_API_KEY (the API key's auth username) and PCE_API_SECRET. "
            "Files are read as `flowexport parse` reads them (text or Parquet). Exit 0 when "
            "every flow was accepted, 1 when the PCE rejected some or some file could not be "
            "read to its end (the flows of the rest are uploaded), 2 on usage, authentication "
            "or connection errors, 3 when some input was unusable (the flows of the rest are "
            "uploaded). A JSON summary goes to stderr, with what the PCE had accepted when an "
            "upload fails part way."
        ),
    )
    parser.add_argument("--pce-url", required=True, help="PCE base URL, e.g. https://pce:8443")
    parser.add_argument("--org", type=int, required=True, help="PCE org id")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--ca-bundle", type=Path, help="PEM file of CA certificates for the PCE")
    tls.add_argument(
        "--insecure", action="store_true", help="do not verify the PCE's TLS certificate"
    )
    parser.add_argument(
        "--batch-size", type=int, default=PCE_MAX_BATCH, help="flows per request (1..1000)"
    )
    parser.add_argument(
        "--rate-per-minute",
        type=float,
        default=DEFAULT_RATE_PER_MINUTE,
        help=f"request rate cap for the API key (default {DEFAULT_RATE_PER_MINUTE})",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=RetryPolicy.attempts - 1,
        help="retries of a request on 429, 5xx, timeouts or resets (with backoff)",
    )
    parser.add_argument(
        "--ensure-workloads",
        action="store_true",
        help=(
            "first create an unmanaged workload (marked external_data_set=flowexport) for "
            "every address that has none, so the flows show on the PCE's map"
        ),
    )
    add_reading_options(parser)
    parser.add_argument("files", nargs="+", metavar="FILE", help="flow-log files ('-': stdin)")
    parser.set_defaults(run=run)


def _credentials() -> PCECredentials:
    username = os.environ.get("PCE_API_KEY", "").strip()
    secret = os.environ.get("PCE_API_SECRET", "")
    if not username or not secret:
        raise UsageError(
            "set PCE_API_KEY (the API key's auth username) and PCE_API_SECRET in the environment"
        )
    problem = username_problem(username)
    if problem is not None:
        raise UsageError(f"PCE_API_KEY {problem}")
    return PCECredentials(username, secret)


def _client(args: argparse.Namespace) -> PCEClient:
    try:
        url = check_pce_url(args.pce_url)
        check_batch_size(args.batch_size)
        ca_pem = args.ca_bundle.read_text() if args.ca_bundle else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read the CA bundle {args.ca_bundle}: {exc.strerror}") from None
    if args.org < 1:
        raise UsageError("--org must be a positive org id")
    if args.retries < 0:
        raise UsageError("--retries cannot be negative")
    try:
        return PCEClient(
            url,
            args.org,
            _credentials(),
            ca_pem=ca_pem,
            insecure=args.insecure,
            rate_per_minute=args.rate_per_minute,
            retry=RetryPolicy(attempts=args.retries + 1),
        )
    except PCEError as exc:
        raise UsageError(str(exc)) from None


async def _upload(
    client: PCEClient,
    args: argparse.Namespace,
    flows: list[Flow],
    report: dict[str, Any],
    done: UploadSummary,
) -> None:
    """Upload the flows, counting each batch the PCE answered in `done` as it comes."""
    async with client:
        if args.ensure_workloads:
            addresses = [ip for flow in flows for ip in (flow.client_ip, flow.server_ip)]
            workloads = await client.ensure_unmanaged_workloads(addresses, EXTERNAL_DATA_SET)
            report["workloads"] = {
                "existing": workloads.existing,
                "created": workloads.created,
                "failed": len(workloads.failed),
            }
        batches = -(-len(flows) // args.batch_size)
        bar = ProgressBar(sys.stderr, batches, "uploading", "batches")

        def on_batch(result: BatchResult) -> None:
            done.add(result)
            bar.advance()

        try:
            await client.upload_all(flows, args.batch_size, on_batch)
        finally:
            bar.close()


def run(args: argparse.Namespace) -> int:
    """Read, aggregate, upload; print a JSON summary on stderr."""
    client = _client(args)
    files = read_flow_files(args, args.files)
    flows = files.flows.flows()
    report: dict[str, Any] = {
        "records": files.stats.records,
        "flows": len(flows),
        "skipped": files.stats.as_dict()["skipped"],
        "file_errors": len(files.problems),
    }
    if files.unusable and not flows:  # nothing to upload: the PCE is not asked
        sys.stderr.write(json.dumps(report) + "\n")
        return files.exit_code
    # Progress is shown by the bar; httpx's per-request lines would drown it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    done = UploadSummary()
    try:
        asyncio.run(_upload(client, args, flows, report, done))
    except PCEError as exc:
        _add_upload(report, done, client)
        report.update({"error": str(exc), "reason": exc.reason})
        sys.stderr.write(json.dumps(report) + "\n")
        if not done.batches:
            raise UsageError(str(exc)) from None
        raise UsageError(
            f"{exc}; before that the PCE had accepted {done.accepted} of the {len(flows)} "
            f"flows and rejected {done.failed}, in {done.batches} batches"
        ) from None
    _add_upload(report, done, client)
    sys.stderr.write(json.dumps(report) + "\n")
    if done.failed:
        return EXIT_REJECTED
    return files.exit_code


def _add_upload(report: dict[str, Any], done: UploadSummary, client: PCEClient) -> None:
    """Put what the PCE answered so far into the report."""
    report.update(
        {
            "uploaded": done.accepted,
            "failed": done.failed,
            "batches": done.batches,
            "retries": client.retries,
        }
    )
    if done.failed_flows:
        report["failed_flows_sample"] = done.failed_flows[:10]


__all__ = ["EXIT_USAGE", "add_parser", "run"]
