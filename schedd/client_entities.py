"""The client half of `schedd entities …` and `schedd records …` (SPEC §3.7), over the HTTP
API, with the standard library only (it finds the server and the key as client.py does).

`schedd records import DEF FILE` reads NDJSON (one `{"key": ..., "data": {...}}` a line) or
CSV (a header row; the `key` column, or --key-column, is the key; the other columns are the
data, converted to the definition's declared types) and sends it in batches (at most
--batch records and about 8 MiB a request), each applied all or none by the server. It
stops at the first refused batch and names the line of the refused record; the batches
before it stay applied (importing the same file again is harmless: upserts).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from schedd.client import (
    _call,
    _common,
    _die,
    _leaf,
    _seg,
    _show,
    print_json,
    print_table,
    request,
    resolve_target,
)
from schedd.client import _error_text as error_text

DEFINITION_COLUMNS = (("ID", "id"), ("NAME", "name"), ("RECORDS", "record_count"),
                      ("FIELDS", "fields"), ("CREATED", "created_at"))
RECORD_COLUMNS = (("KEY", "key"), ("UPDATED", "updated_at"), ("DATA", "data"))
FIELD_TYPES = ("date", "datetime", "string", "number", "boolean")
MAX_BATCH = 10_000
BATCH_BYTES = 8 * 1024 * 1024
IMPORT_TIMEOUT_S = 120.0  # a batch of 10,000 is re-planned in its transaction


def _defs(def_id: str) -> str:
    return f"/v1/entity-definitions/{_seg(def_id)}"


def _fields(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, ftype = item.partition("=")
        if not sep or not name or ftype not in FIELD_TYPES:
            _die(f"--field takes NAME=TYPE, TYPE one of {', '.join(FIELD_TYPES)}: {item!r}")
        out[name] = ftype
    return out


# ---------------------------------------------------------------------------- entities
def cmd_entities_ls(args: argparse.Namespace) -> int:
    _, page = _call(args, "GET", "/v1/entity-definitions",
                    query={"limit": args.limit, "offset": args.offset})
    if args.json:
        print_json(page)
    else:
        print_table(DEFINITION_COLUMNS, page.get("entity_definitions") or [])
    return 0


def cmd_entities_get(args: argparse.Namespace) -> int:
    _, d = _call(args, "GET", _defs(args.id))
    _show(args, d)
    return 0


def cmd_entities_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "fields": _fields(args.field)}
    if args.description is not None:
        body["description"] = args.description
    _, d = _call(args, "POST", "/v1/entity-definitions", body=body)
    _show(args, d)
    return 0


def cmd_entities_update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    fields: dict[str, Any] = _fields(args.field)
    for name in args.remove_field or []:
        fields[name] = None
    if fields:
        body["fields"] = fields
    if args.description is not None:
        body["description"] = args.description
    _, d = _call(args, "PUT", _defs(args.id), body=body)
    _show(args, d)
    return 0


def cmd_entities_rm(args: argparse.Namespace) -> int:
    _call(args, "DELETE", _defs(args.id))
    if not args.json:
        print(f"deleted {args.id}")
    return 0


# ---------------------------------------------------------------------------- records
def _data_arg(text: str) -> Any:
    try:
        data = json.loads(text)
    except ValueError as exc:
        _die(f"--data is not JSON: {exc}")
    if not isinstance(data, dict):
        _die("--data must be a JSON object")
    return data


def cmd_records_put(args: argparse.Namespace) -> int:
    status, rec = _call(args, "PUT", f"{_defs(args.definition)}/records/{_seg(args.key)}",
                        body={"data": _data_arg(args.data)})
    if not args.json:
        print("created" if status == 201 else "replaced", file=sys.stderr)
    _show(args, rec)
    return 0


def cmd_records_get(args: argparse.Namespace) -> int:
    _, rec = _call(args, "GET", f"{_defs(args.definition)}/records/{_seg(args.key)}")
    _show(args, rec)
    return 0


def cmd_records_rm(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"{_defs(args.definition)}/records/{_seg(args.key)}")
    if not args.json:
        print(f"deleted {args.key}")
    return 0


def cmd_records_ls(args: argparse.Namespace) -> int:
    _, page = _call(args, "GET", f"{_defs(args.definition)}/records",
                    query={"limit": args.limit, "after": args.after})
    if args.json:
        print_json(page)
        return 0
    print_table(RECORD_COLUMNS, page.get("records") or [])
    if page.get("next_after") is not None:
        print(f"(the next page: --after {page['next_after']})", file=sys.stderr)
    return 0


def _convert(ftype: str | None, text: str, where: str) -> Any:
    """A CSV cell as the definition's type (undeclared: a string; empty: null)."""
    if text == "":
        return None
    if ftype == "number":
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                _die(f"{where}: {text!r} is not a number", 1)
    if ftype == "boolean":
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        _die(f"{where}: {text!r} is not a boolean (true/false)", 1)
    return text


def read_ndjson(f: IO[str]) -> Iterator[tuple[int, str, Any]]:
    """(line number, key, data) of each non-empty line."""
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            _die(f"line {n}: not JSON: {exc}", 1)
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or (
                not isinstance(item.get("data"), dict)):
            _die(f"line {n}: expected {{\"key\": \"...\", \"data\": {{...}}}}", 1)
        yield n, item["key"], item["data"]


def read_csv(f: IO[str], fields: Mapping[str, str],
             key_column: str) -> Iterator[tuple[int, str, Any]]:
    reader = csv.DictReader(f)
    if reader.fieldnames is None or key_column not in reader.fieldnames:
        _die(f"the CSV header has no {key_column!r} column", 1)
    for row in reader:
        n = reader.line_num
        key = row.pop(key_column) or ""
        data = {col: _convert(fields.get(col), val or "", f"line {n}, column {col}")
                for col, val in row.items() if col is not None}
        yield n, key, data


def _batches(items: Iterator[tuple[int, str, Any]],
             size: int) -> Iterator[list[tuple[int, str, Any]]]:
    batch: list[tuple[int, str, Any]] = []
    nbytes = 0
    for item in items:
        cost = len(json.dumps(item[2])) + len(item[1]) + 32
        if batch and (len(batch) >= size or nbytes + cost > BATCH_BYTES):
            yield batch
            batch, nbytes = [], 0
        batch.append(item)
        nbytes += cost
    if batch:
        yield batch


def cmd_records_import(args: argparse.Namespace) -> int:
    if not 1 <= args.batch <= MAX_BATCH:
        _die(f"--batch is 1..{MAX_BATCH}")
    target = resolve_target(args)
    path = Path(args.file)
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "ndjson")
    _, d = request(target, "GET", _defs(args.definition))
    fields: Mapping[str, str] = d.get("fields") or {}
    total = 0
    try:
        f = sys.stdin if args.file == "-" else path.open(encoding="utf-8", newline="")
    except OSError as exc:
        _die(f"cannot read {args.file}: {exc.strerror or exc}", 1)
    with f:
        items = read_csv(f, fields, args.key_column) if fmt == "csv" else read_ndjson(f)
        for batch in _batches(items, args.batch):
            body = {"upsert": [{"key": k, "data": data} for _, k, data in batch]}
            status, answer = request(target, "POST", f"{_defs(args.definition)}/records/batch",
                                     body=body, answer_4xx=True, timeout=IMPORT_TIMEOUT_S)
            if status != 200:
                _die(_refusal(status, answer, batch, total), 1)
            total += int(answer.get("upserted", 0))
            if not args.json:
                print(f"imported {total} record(s)", file=sys.stderr)
    if args.json:
        print_json({"upserted": total})
    else:
        print(f"{total} record(s) imported")
    return 0


def _refusal(status: int, answer: Any, batch: list[tuple[int, str, Any]], done: int) -> str:
    """The first refused item named by its line; what was imported before it."""
    detail = answer.get("detail") if isinstance(answer, dict) else None
    where = ""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc") or []
        if len(loc) >= 3 and loc[:2] == ["body", "upsert"] and isinstance(loc[2], int) and (
                0 <= loc[2] < len(batch)):
            rest = ".".join(str(p) for p in loc[3:])
            where = f"line {batch[loc[2]][0]} ({rest or 'record'}): {detail[0].get('msg')}"
    text = where or error_text(status, "", json.dumps(answer).encode())
    return (f"{text} — this batch was not applied; {done} record(s) imported before it "
            "(the import can be run again)")


def add_commands(sub: Any) -> None:
    """Add `entities` and `records` to the `schedd` parser's subcommands."""
    g = sub.add_parser("entities", help="entity definitions for relative schedules (API)")
    parser_class = type(g)
    ge = g.add_subparsers(dest="entities_command", metavar="ACTION",
                          parser_class=parser_class, required=True)
    p = _leaf(ge, "ls", "list entity definitions, oldest first", cmd_entities_ls,
              aliases=["list"])
    p.add_argument("--limit", type=int, metavar="N", help="at most N (1..200, default 50)")
    p.add_argument("--offset", type=int, metavar="N", help="skip the first N (default 0)")
    _leaf(ge, "get", "show one entity definition", cmd_entities_get, id_of="definition")
    p = _leaf(ge, "create", "create an entity definition", cmd_entities_create)
    p.add_argument("--name", required=True, help="unique in the tenant, 1..100 characters")
    p.add_argument("--field", action="append", metavar="NAME=TYPE", required=True,
                   help=f"a field and its type ({', '.join(FIELD_TYPES)}); repeatable")
    p.add_argument("--description")
    p = _leaf(ge, "update", "add, retype or remove fields; change the description",
              cmd_entities_update, id_of="definition")
    p.add_argument("--field", action="append", metavar="NAME=TYPE",
                   help="add or retype a field; repeatable")
    p.add_argument("--remove-field", action="append", metavar="NAME",
                   help="remove a field; repeatable")
    p.add_argument("--description")
    _leaf(ge, "rm", "delete an entity definition and its records", cmd_entities_rm,
          aliases=["delete"], id_of="definition")

    g = sub.add_parser("records", help="records of an entity definition (API)")
    gr = g.add_subparsers(dest="records_command", metavar="ACTION",
                          parser_class=parser_class, required=True)

    def rec(name: str, help_: str, func: Any, aliases: tuple[str, ...] = (),
            key: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = gr.add_parser(name, help=help_, description=help_ + ".",
                                                   aliases=list(aliases))
        p.add_argument("definition", metavar="DEF", help="the entity definition's id")
        if key:
            p.add_argument("key", metavar="KEY", help="the record's key")
        _common(p)
        p.set_defaults(func=func, prog=p.prog)
        return p

    p = rec("put", "create or replace a record (re-plans its occurrences)", cmd_records_put)
    p.add_argument("--data", required=True, metavar="JSON", help="the record's data object")
    rec("get", "show a record", cmd_records_get)
    rec("rm", "delete a record (its pending occurrences go)", cmd_records_rm,
        aliases=("delete",))
    p = rec("ls", "list records in key order", cmd_records_ls, aliases=("list",), key=False)
    p.add_argument("--limit", type=int, metavar="N", help="at most N (1..1000, default 100)")
    p.add_argument("--after", metavar="KEY", help="start after this key (a page's next_after)")
    p = rec("import", "upsert records from an NDJSON or CSV file, in batches",
            cmd_records_import, key=False)
    p.add_argument("file", metavar="FILE", help="the file, or - for stdin")
    p.add_argument("--format", choices=["ndjson", "csv"],
                   help="default: csv for a .csv file, else ndjson")
    p.add_argument("--key-column", default="key", metavar="NAME",
                   help="CSV: the column holding the key (default key)")
    p.add_argument("--batch", type=int, default=5000, metavar="N",
                   help=f"records per request (1..{MAX_BATCH}, default 5000)")
