"""`retain import`: bulk-load CDNOW, transaction and event files through ProfileService.IngestEvents.

The lead mounts `import_app` as `retain import`. Message ids are derived from file content, so re-running
an import stores nothing new (every row comes back as a duplicate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import grpc
import typer
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.protoconv import to_struct, to_timestamp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from retain_profile.domain import importing
from retain_profile.domain.events import IncomingEvent
from retain_profile.domain.importing import ParsedLine

if TYPE_CHECKING:
    from retain.profile.v1.profile_pb2_grpc import ProfileServiceAsyncStub

import_app = typer.Typer(help="Bulk-import customers' events into the profile service.", no_args_is_help=True)
console = Console(stderr=True)

DEFAULT_BATCH = 500
MAX_REPORTED_ERRORS = 20


class Kind(StrEnum):
    cdnow = "cdnow"
    transactions = "transactions"
    events = "events"


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    # (file line, field, error) of rejected rows, the first MAX_REPORTED_ERRORS.
    errors: list[tuple[int, str, str]] = field(default_factory=list)


def to_proto(event: IncomingEvent) -> profile_pb2.Event:
    return profile_pb2.Event(
        message_id=event.message_id,
        type=profile_pb2.EventType.Value("EVENT_TYPE_" + event.type.upper())
        if event.type.upper() in ("TRACK", "IDENTIFY", "PAGE", "ALIAS", "SCREEN")
        else profile_pb2.EVENT_TYPE_UNSPECIFIED,
        event=event.event,
        user_id=event.user_id,
        anonymous_id=event.anonymous_id,
        previous_id=event.previous_id,
        properties=to_struct(dict(event.properties)),
        traits=to_struct(dict(event.traits)),
        context=to_struct(dict(event.context)),
        timestamp=to_timestamp(event.timestamp),
    )


def parse(path: Path, kind: Kind) -> Iterator[ParsedLine]:
    text = path.read_text(encoding="utf-8-sig")
    if kind is Kind.cdnow:
        return importing.cdnow(text.splitlines())
    rows = importing.records(text, suffix=path.suffix.lower())
    return importing.transactions(rows) if kind is Kind.transactions else importing.events(rows)


async def run_import(
    stub: ProfileServiceAsyncStub,
    workspace_id: str,
    lines: Iterable[ParsedLine],
    *,
    batch_size: int = DEFAULT_BATCH,
    timeout: float = 60.0,
    on_batch: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    iterator = iter(lines)
    while chunk := list(islice(iterator, batch_size)):
        response = await stub.IngestEvents(
            profile_pb2.IngestEventsRequest(workspace_id=workspace_id, events=[to_proto(p.event) for p in chunk]),
            timeout=timeout,
        )
        report.rows += len(chunk)
        report.accepted += response.accepted
        report.duplicates += response.duplicates
        report.rejected += response.rejected
        for result in response.results:
            if result.status == profile_pb2.INGEST_STATUS_REJECTED and len(report.errors) < MAX_REPORTED_ERRORS:
                report.errors.append((chunk[result.index].line, result.field, result.error))
        if on_batch is not None:
            on_batch(len(chunk))
    return report


async def _import(path: Path, kind: Kind, *, addr: str, workspace: str, batch_size: int) -> ImportReport:
    try:
        lines = list(parse(path, kind))
    except importing.ImportError_ as exc:
        raise typer.BadParameter(str(exc), param_hint="FILE") from None
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = profile_pb2_grpc.ProfileServiceStub(ch)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"importing {path.name}", total=len(lines))
            return await run_import(
                stub, workspace, lines, batch_size=batch_size,
                on_batch=lambda n: progress.advance(task, n),
            )


def _run(path: Path, kind: Kind, addr: str, workspace: str, batch_size: int) -> None:
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint="FILE")
    try:
        report = asyncio.run(_import(path, kind, addr=addr, workspace=workspace, batch_size=batch_size))
    except grpc.aio.AioRpcError as exc:
        console.print(f"[red]profile service at {addr}: {exc.code().name}: {exc.details()}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"{report.rows} rows: [green]{report.accepted} stored[/green], {report.duplicates} already there, "
        f"[red]{report.rejected} rejected[/red]"
    )
    for line, field_name, error in report.errors:
        console.print(f"  line {line}: {field_name}: {error}")
    if report.rejected:
        raise typer.Exit(1)


Addr = Annotated[str, typer.Option("--profile-addr", help="ProfileService gRPC address.")]
Workspace = Annotated[str, typer.Option("--workspace", help="Workspace the events belong to.")]
Batch = Annotated[int, typer.Option("--batch-size", min=1, max=1000, help="Events per IngestEvents call.")]
File = Annotated[Path, typer.Argument(help="The file to import.")]


def _default_addr() -> str:
    return Endpoints().profile_addr


@import_app.command("cdnow")
def import_cdnow(
    file: File, profile_addr: Addr = "", workspace: Workspace = "ws_demo", batch_size: Batch = DEFAULT_BATCH
) -> None:
    """CDNOW transactions (1/10 sample or full-cohort layout) as `Order Completed` events."""
    _run(file, Kind.cdnow, profile_addr or _default_addr(), workspace, batch_size)


@import_app.command("transactions")
def import_transactions(
    file: File, profile_addr: Addr = "", workspace: Workspace = "ws_demo", batch_size: Batch = DEFAULT_BATCH
) -> None:
    """CSV or JSONL transactions: customer_id, timestamp/date, revenue[, order_id, discount, category]."""
    _run(file, Kind.transactions, profile_addr or _default_addr(), workspace, batch_size)


@import_app.command("events")
def import_events(
    file: File, profile_addr: Addr = "", workspace: Workspace = "ws_demo", batch_size: Batch = DEFAULT_BATCH
) -> None:
    """CSV or JSONL Segment-shaped events (type, event, userId/anonymousId, properties, timestamp)."""
    _run(file, Kind.events, profile_addr or _default_addr(), workspace, batch_size)
