"""`flowexport upload`: backfill flow-log files, or the flow-log objects under an S3 prefix
(`s3://bucket/prefix --since TIME`: listed with ListObjectsV2, no queue), into a PCE."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from flowexport.commands.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    UsageError,
    add_reading_options,
    open_input,
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
    s3 = parser.add_argument_group(
        "flow logs in S3",
        "FILE may be s3://bucket/prefix: the flow-log objects under the prefix (text or "
        "Parquet, any key layout AWS writes), listed with ListObjectsV2, whose key timestamp "
        "is in [--since, --until); other keys are skipped and counted. AWS credentials come "
        "from the default chain (environment, profile, instance role).",
    )
    s3.add_argument(
        "--since",
        metavar="TIME",
        help="with s3://: objects whose key timestamp is at or after TIME (RFC 3339, e.g. "
        "2026-12-06T00:00:00Z); required with s3://",
    )
    s3.add_argument(
        "--until",
        metavar="TIME",
        help="with s3://: only objects whose key timestamp is before TIME",
    )
    s3.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        help="the bucket's region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)",
    )
    s3.add_argument(
        "--endpoint-url", help="an S3 endpoint other than AWS's (e.g. a VPC endpoint or moto)"
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="flow-log files ('-': stdin) or s3://bucket/prefix (with --since)",
    )
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


def _time(option: str, text: str) -> int:
    """An RFC 3339 time (a date alone is its midnight UTC) in epoch milliseconds."""
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a time: give RFC 3339, e.g. 2026-12-06T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        if "T" in text or " " in text.strip():
            raise UsageError(f"{option} {text!r} has no time zone: end it with Z or +00:00")
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _s3_inputs(args: argparse.Namespace, report: dict[str, Any]) -> tuple[list[str], Any]:
    """The names of the inputs in order (s3:// prefixes expanded into their objects) and the
    opener of an S3 object's name (None without s3://)."""
    prefixes = [f for f in args.files if f.startswith("s3://")]
    if not prefixes:
        if args.since or args.until:
            raise UsageError("--since and --until go with an s3://bucket/prefix")
        return list(args.files), None
    if not args.since:
        raise UsageError("s3://bucket/prefix needs --since TIME (the first key timestamp read)")
    since = _time("--since", args.since)
    until = _time("--until", args.until) if args.until else None
    if until is not None and until <= since:
        raise UsageError("--until must be after --since")
    from flowexport.aws.errors import AwsError  # noqa: PLC0415 - boto3 only for s3://
    from flowexport.aws.s3 import ObjectRef, list_flow_log_objects, open_object  # noqa: PLC0415
    from flowexport.aws.session import AwsTarget, make_clients  # noqa: PLC0415

    try:
        clients = make_clients(AwsTarget(args.region, endpoint_url=args.endpoint_url))
    except AwsError as exc:
        raise UsageError(str(exc)) from None
    names: list[str] = []
    refs: dict[str, ObjectRef] = {}
    listed = {"objects": 0, "not_flow_logs": 0, "outside_time_range": 0}
    for given in args.files:
        if not given.startswith("s3://"):
            names.append(given)
            continue
        bucket, _, prefix = given.removeprefix("s3://").partition("/")
        if not bucket:
            raise UsageError(f"{given}: give s3://bucket/prefix")
        try:
            found = list_flow_log_objects(clients, bucket, prefix, since, until)
        except AwsError as exc:
            raise UsageError(f"cannot list {given}: {exc}") from None
        listed["objects"] += len(found.objects)
        listed["not_flow_logs"] += found.not_flow_logs
        listed["outside_time_range"] += found.outside
        for ref in found.objects:
            names.append(ref.name)
            refs[ref.name] = ref
    report["s3"] = listed

    @contextmanager
    def opener(name: str) -> Iterator[IO[bytes]]:
        ref = refs.get(name)
        if ref is None:
            with open_input(name) as stream:
                yield stream
            return
        stream = open_object(clients, ref)
        try:
            yield stream
        finally:
            stream.close()

    return names, opener


def run(args: argparse.Namespace) -> int:
    """Read, aggregate, upload; print a JSON summary on stderr."""
    client = _client(args)
    listed: dict[str, Any] = {}
    names, opener = _s3_inputs(args, listed)
    files = read_flow_files(args, names, opener)
    flows = files.flows.flows()
    report: dict[str, Any] = {
        "records": files.stats.records,
        "flows": len(flows),
        "skipped": files.stats.as_dict()["skipped"],
        "file_errors": len(files.problems),
        **listed,
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
