#!/usr/bin/env python3
"""Check that the DynamoDB tables in infra/template.yaml equal infra/tables.json.

tables.json is the table list the local stack creates (CreateTable parameters minus the
prefix); template.yaml is what AWS gets. For every table this compares the name suffix,
KeySchema (in order), AttributeDefinitions (as a set), BillingMode, secondary indexes and the
TTL attribute, and checks that RELAY_TABLE_PREFIX is the stack name that the template's
table names start with. Exit status 0 when they agree, 1 with a list of differences when not.

Usage: check_tables.py [--template PATH] [--tables PATH]
Needs cfn-lint (its YAML loader understands !Ref, !Sub, ...), as installed by infra/lint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME_PREFIX = "${AWS::StackName}-"


def load_template(path: Path) -> dict:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(path))


def plain(value):
    """cfn-lint's nodes subclass dict/list/str; turn them into plain JSON values."""
    return json.loads(json.dumps(value))


def canonical_attrs(defs) -> list:
    return sorted((d["AttributeName"], d["AttributeType"]) for d in defs or [])


def canonical_indexes(indexes) -> list:
    return sorted(json.dumps(i, sort_keys=True) for i in indexes or [])


def template_tables(template: dict, errors: list[str]) -> dict[str, dict]:
    tables = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = plain(resource.get("Properties") or {})
        name = props.get("TableName")
        sub = name.get("Fn::Sub") if isinstance(name, dict) else None
        if not isinstance(sub, str) or not sub.startswith(NAME_PREFIX):
            errors.append(
                f"{logical_id}: TableName must be !Sub \"{NAME_PREFIX}<suffix>\", found {json.dumps(name)}"
            )
            continue
        suffix = sub[len(NAME_PREFIX):]
        if suffix in tables:
            errors.append(f"{logical_id}: table suffix {suffix!r} defined twice")
        ttl_spec = props.get("TimeToLiveSpecification")
        ttl = None
        if ttl_spec is not None:
            if ttl_spec.get("Enabled") is not True:
                errors.append(f"{logical_id}: TimeToLiveSpecification present but not Enabled: true")
            ttl = ttl_spec.get("AttributeName")
        tables[suffix] = {
            "logical_id": logical_id,
            "KeySchema": props.get("KeySchema"),
            "AttributeDefinitions": props.get("AttributeDefinitions"),
            "BillingMode": props.get("BillingMode"),
            "GlobalSecondaryIndexes": props.get("GlobalSecondaryIndexes"),
            "LocalSecondaryIndexes": props.get("LocalSecondaryIndexes"),
            "TtlAttribute": ttl,
        }
    return tables


def compare(template: dict, spec: list) -> list[str]:
    errors: list[str] = []
    found = template_tables(template, errors)
    wanted = {}
    for entry in spec:
        suffix = entry.get("TableName")
        if not suffix:
            errors.append(f"tables.json: entry without TableName: {entry}")
            continue
        wanted[suffix] = entry

    for suffix in sorted(set(wanted) - set(found)):
        errors.append(f"table {suffix!r} is in tables.json but not in template.yaml")
    for suffix in sorted(set(found) - set(wanted)):
        errors.append(f"table {suffix!r} ({found[suffix]['logical_id']}) is in template.yaml but not in tables.json")

    for suffix in sorted(set(found) & set(wanted)):
        t, w = found[suffix], wanted[suffix]
        where = f"table {suffix!r} ({t['logical_id']})"
        if t["KeySchema"] != w.get("KeySchema"):
            errors.append(f"{where}: KeySchema differs: template {t['KeySchema']} != tables.json {w.get('KeySchema')}")
        if canonical_attrs(t["AttributeDefinitions"]) != canonical_attrs(w.get("AttributeDefinitions")):
            errors.append(
                f"{where}: AttributeDefinitions differ: template {t['AttributeDefinitions']}"
                f" != tables.json {w.get('AttributeDefinitions')}"
            )
        if t["BillingMode"] != w.get("BillingMode", "PAY_PER_REQUEST"):
            errors.append(f"{where}: BillingMode differs: template {t['BillingMode']} != tables.json {w.get('BillingMode')}")
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if canonical_indexes(t[key]) != canonical_indexes(w.get(key)):
                errors.append(f"{where}: {key} differ")
        if t["TtlAttribute"] != w.get("TtlAttribute"):
            errors.append(f"{where}: TTL attribute differs: template {t['TtlAttribute']!r} != tables.json {w.get('TtlAttribute')!r}")

    # The functions find the tables through RELAY_TABLE_PREFIX, which must be the stack name.
    variables = (
        plain(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    )
    if variables.get("RELAY_TABLE_PREFIX") != {"Ref": "AWS::StackName"}:
        errors.append(
            "Globals.Function.Environment.Variables.RELAY_TABLE_PREFIX must be !Ref AWS::StackName,"
            f" found {json.dumps(variables.get('RELAY_TABLE_PREFIX'))}"
        )
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=HERE / "template.yaml")
    parser.add_argument("--tables", type=Path, default=HERE / "tables.json")
    args = parser.parse_args(argv)

    spec = json.loads(args.tables.read_text())
    if not isinstance(spec, list):
        print(f"{args.tables}: expected a JSON list of tables", file=sys.stderr)
        return 1
    errors = compare(load_template(args.template), spec)
    if errors:
        print(f"check_tables: {args.template} and {args.tables} disagree:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"check_tables: {len(spec)} tables agree ({', '.join(e['TableName'] for e in spec)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
