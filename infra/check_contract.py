#!/usr/bin/env python3
"""Check infra/template.yaml against what the Rust functions expect of it.

The functions dispatch on requestContext.routeKey, so the HTTP API route keys must be exactly
those of the route table in the Rust code (shared::routes, printed by `relay-routes`); the WebSocket API must route on $request.body.action to the connection function
with a route response on $default; every function must be a cargo-lambda build of its own
binary on provided.al2023/arm64 and see the environment the code reads, and every variable the
template sets must be one the code declares (the `settings` `relay-routes` prints, from
shared/src/config), so a misspelt one is not silently ignored. The attachments bucket
must be private, encrypted, expiring and reachable by browsers, and only the attachments
function may touch it, with PutObject/GetObject on attachments/* alone (a presigned URL can do
what its signer may). The dashboard and the alarms may only read metrics the functions write
(`metrics` of `relay-routes`, from shared::metrics and shared::telemetry): in the functions'
namespace (RELAY_METRICS_NAMESPACE), declared names, each with exactly its dimensions (`function`
and its labels) and values those labels take; the objectives (p95 of log-in and bundle fetches,
of sends) and the failures (HTTP 5xx, Lambda errors and throttles of every function, DynamoDB
throttles of every table) must each have an alarm notifying AlarmTopicArn. cfn-lint checks the
template's syntax and types, not these facts. Exit status 0 when all hold, 1 otherwise.

Usage: check_contract.py [--template PATH] [--routes JSON]   (needs cfn-lint's YAML loader, see infra/lint)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ROOT = HERE.parent


def logical_id_of(function: str) -> str:
    """The template's logical id of a function: users -> UsersFunction."""
    return f"{function.capitalize()}Function"


def load_routes(path: Path | None) -> dict:
    """The route table of the Rust code (`shared::routes`), as `relay-routes` prints it; from a
    file when one is given (the self-test in infra/lint feeds a changed one)."""
    if path is not None:
        return json.loads(path.read_text())
    out = subprocess.run(
        ["cargo", "run", "--quiet", "-p", "local-gateway", "--bin", "relay-routes"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


GLOBAL_ENV = {
    "REDIS_URL",
    "REDIS_URL_SECRET_ID",
    "REDIS_CLUSTER",
    "RELAY_TABLE_PREFIX",
    "JWT_SECRET_ID",
    "RUST_LOG",
    "RELAY_LOG_FORMAT",
    "RELAY_METRICS_NAMESPACE",
}


# Environment a function needs beyond Globals, set on the function itself.
FUNCTION_ENV = {
    # The connection function pushes and closes; the users function closes ended sessions' sockets.
    "ConnectionFunction": {"WS_MANAGEMENT_ENDPOINT"},
    # Account deletion deletes the account's uploads from the attachments bucket.
    "UsersFunction": {"WS_MANAGEMENT_ENDPOINT", "ATTACHMENTS_BUCKET"},
    # Without it the attachment routes answer 503 (shared::config::AttachmentsConfig).
    "AttachmentsFunction": {"ATTACHMENTS_BUCKET"},
}

# The only S3 permissions in the template: what the attachments function presigns
# (shared/src/storage/s3.rs), and the DeleteObjects of account deletion (users function), on the
# objects the code names (attachments/<id>).
ATTACHMENTS_FUNCTION = "AttachmentsFunction"
ATTACHMENTS_S3_ACTIONS = {"s3:PutObject", "s3:GetObject"}
S3_ROLES = {
    "AttachmentsFunctionRole": ATTACHMENTS_S3_ACTIONS,
    # DeleteObjects is authorized as s3:DeleteObject per key.
    "UsersFunctionRole": {"s3:DeleteObject"},
}
# The attachments function reads the uploader's account age (users table) and records the
# upload in the uploader's index (groups table) in one transaction checking the user exists.
ATTACHMENTS_DYNAMODB = {
    "UsersTable": {"dynamodb:GetItem", "dynamodb:ConditionCheckItem", "dynamodb:TransactWriteItems"},
    "GroupsTable": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:TransactWriteItems"},
}
ATTACHMENTS_PREFIX = "attachments/"
ATTACHMENTS_EXPIRY_DAYS = 30


def plain(value):
    return json.loads(json.dumps(value))


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statements(policies) -> list[dict]:
    """Every statement of a role's inline policies, both branches of an Fn::If included."""
    out: list[dict] = []
    for policy in as_list(policies or []):
        if isinstance(policy, dict) and "Fn::If" in policy:
            branches = policy["Fn::If"][1:]
        else:
            branches = [policy]
        for b in branches:
            if isinstance(b, dict) and "PolicyDocument" in b:
                out += as_list((b["PolicyDocument"] or {}).get("Statement") or [])
    return out


def check_attachments(resources: dict) -> list[str]:
    """The attachments bucket and who may touch it."""
    errors: list[str] = []
    fn = (resources.get(ATTACHMENTS_FUNCTION) or {}).get("Properties") or {}
    ref = ((fn.get("Environment") or {}).get("Variables") or {}).get("ATTACHMENTS_BUCKET")
    bucket_id = ref.get("Ref") if isinstance(ref, dict) else None
    bucket = resources.get(bucket_id) if bucket_id else None
    if not bucket or bucket.get("Type") != "AWS::S3::Bucket":
        return [f"{ATTACHMENTS_FUNCTION}: ATTACHMENTS_BUCKET must be !Ref of the template's AWS::S3::Bucket"]
    props = bucket.get("Properties") or {}
    block = props.get("PublicAccessBlockConfiguration") or {}
    for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        if block.get(flag) is not True:
            errors.append(f"{bucket_id}: PublicAccessBlockConfiguration.{flag} must be true")
    owners = [r.get("ObjectOwnership") for r in ((props.get("OwnershipControls") or {}).get("Rules") or [])]
    if owners != ["BucketOwnerEnforced"]:
        errors.append(f"{bucket_id}: OwnershipControls must be BucketOwnerEnforced (ACLs off)")
    sse = [
        (r.get("ServerSideEncryptionByDefault") or {}).get("SSEAlgorithm")
        for r in ((props.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration") or [])
    ]
    if not sse or any(a not in ("AES256", "aws:kms", "aws:kms:dsse") for a in sse):
        errors.append(f"{bucket_id}: needs default server-side encryption (AES256 or aws:kms)")
    rules = [r for r in ((props.get("LifecycleConfiguration") or {}).get("Rules") or []) if r.get("Status") == "Enabled"]
    if not any(
        (r.get("Prefix") or (r.get("Filter") or {}).get("Prefix")) == ATTACHMENTS_PREFIX
        and r.get("ExpirationInDays") == ATTACHMENTS_EXPIRY_DAYS
        for r in rules
    ):
        errors.append(
            f"{bucket_id}: needs an enabled lifecycle rule expiring {ATTACHMENTS_PREFIX} after {ATTACHMENTS_EXPIRY_DAYS} days"
        )
    if not any(r.get("AbortIncompleteMultipartUpload") for r in rules):
        errors.append(f"{bucket_id}: needs an enabled lifecycle rule aborting incomplete multipart uploads")
    cors = (props.get("CorsConfiguration") or {}).get("CorsRules") or []
    if not any({"PUT", "GET"} <= set(r.get("AllowedMethods") or []) for r in cors):
        errors.append(f"{bucket_id}: CORS must allow PUT and GET (web clients upload and download directly)")

    # S3 permissions: only the roles of S3_ROLES, only their actions, only the prefix.
    role_id = (fn.get("Role") or {}).get("Fn::GetAtt", [None])[0] if isinstance(fn.get("Role"), dict) else None
    want_resource = {"Fn::Sub": f"${{{bucket_id}.Arn}}/{ATTACHMENTS_PREFIX}*"}
    granted_by: dict[str, set[str]] = {}
    for lid, res in resources.items():
        if res.get("Type") != "AWS::IAM::Role":
            continue
        for st in statements((res.get("Properties") or {}).get("Policies")):
            actions = {str(a) for a in as_list(st.get("Action") or [])}
            s3 = {a for a in actions if a.lower().startswith("s3:") or a == "*"}
            if not s3:
                continue
            allowed = S3_ROLES.get(lid)
            if allowed is None:
                errors.append(f"{lid}: only {sorted(S3_ROLES)} may have S3 permissions, found {sorted(s3)}")
                continue
            if st.get("Effect") != "Allow" or s3 != actions or not s3 <= allowed:
                errors.append(f"{lid}: S3 statements must allow only {sorted(allowed)}, found {sorted(actions)}")
            if as_list(st.get("Resource")) != [want_resource]:
                errors.append(
                    f"{lid}: S3 permissions must be on {want_resource['Fn::Sub']} only, found {st.get('Resource')}"
                )
            granted_by.setdefault(lid, set()).update(s3)
    if role_id and role_id not in S3_ROLES:
        errors.append(f"{role_id}: the attachments function's role must be one of {sorted(S3_ROLES)}")
    for lid, allowed in S3_ROLES.items():
        if granted_by.get(lid, set()) != allowed:
            errors.append(f"{lid}: must allow {sorted(allowed)} on attachments, found {sorted(granted_by.get(lid, set()))}")
    # Its DynamoDB permissions: exactly ATTACHMENTS_DYNAMODB's, table by table.
    role = (resources.get(role_id) or {}).get("Properties") or {}
    found: dict[str, set[str]] = {}
    for st in statements(role.get("Policies")):
        actions = {str(a) for a in as_list(st.get("Action") or [])}
        if not any(a.lower().startswith("dynamodb:") for a in actions):
            continue
        for r in as_list(st.get("Resource")):
            table = r.get("Fn::GetAtt", [None])[0] if isinstance(r, dict) else None
            found.setdefault(str(table), set()).update(actions)
    if found != ATTACHMENTS_DYNAMODB:
        errors.append(
            f"{role_id}: the attachments function's DynamoDB permissions must be "
            f"{ {t: sorted(a) for t, a in ATTACHMENTS_DYNAMODB.items()} }, found { {t: sorted(a) for t, a in found.items()} }"
        )
    return errors


# ---------------------------------------------------------------- metrics: dashboard and alarms

# The objectives' alarms: (metric, label, value, p95 bound in seconds). Each needs an alarm on the
# metric's p95 for that label value, breaching above at most the bound.
OBJECTIVES = [
    ("relay_http_request_duration_seconds", "route", "POST /v1/sessions", 0.2),
    ("relay_http_request_duration_seconds", "route", "GET /v1/users/{user_id}/bundle", 0.2),
    ("relay_http_request_duration_seconds", "route", "GET /v1/users/{user_id}/devices/{device_id}/bundle", 0.2),
    ("relay_frame_duration_seconds", "action", "send", 0.5),
]
ALARM_ACTIONS = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def render(node, conditions: bool) -> str:
    """A string-valued intrinsic (Fn::Sub, Fn::Join, Fn::If, Ref, Fn::GetAtt) as text, every
    reference written <Name> and every condition taken as `conditions`."""
    if isinstance(node, str):
        return node
    if isinstance(node, (int, float)):
        return str(node)
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{'.'.join(arg) if isinstance(arg, list) else arg}>"
        if fn == "Fn::Join":
            return render(arg[0], conditions).join(render(p, conditions) for p in arg[1])
        if fn == "Fn::If":
            return render(arg[1] if conditions else arg[2], conditions)
        if fn == "Fn::Sub":
            text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

            def sub(m):
                name = m.group(1)
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                return render(names[name], conditions) if name in names else f"<{name}>"

            return re.sub(r"\$\{([^}]+)\}", sub, text)
    raise ValueError(f"cannot render {json.dumps(node)[:80]}")


class MetricUse:
    """One metric a dashboard widget or an alarm reads."""

    def __init__(self, where: str, namespace: str, name: str, dimensions: dict, stat: str | None = None):
        self.where, self.namespace, self.name, self.dimensions, self.stat = where, namespace, name, dimensions, stat


def dashboard_uses(where: str, body: dict) -> list[MetricUse]:
    """The metrics of a dashboard's metric widgets: rows [namespace, name, dim, value, ..., {options}]
    (a "." repeats the previous row's field) and the SEARCH expressions' schemas and terms
    (dimension values None when a search spans them)."""
    uses: list[MetricUse] = []
    for i, widget in enumerate(body.get("widgets") or []):
        props = widget.get("properties") or {}
        title = f"{where} widget {i} ({props.get('title', widget.get('type'))!r})"
        previous: list = []
        for row in props.get("metrics") or []:
            has_options = bool(row) and isinstance(row[-1], dict)
            options = row[-1] if has_options else {}
            fields = row[:-1] if has_options else row
            fields = [previous[j] if f == "." and j < len(previous) else f for j, f in enumerate(fields)]
            if fields:
                previous = fields
                dims = dict(zip(fields[2::2], fields[3::2]))
                uses.append(MetricUse(title, fields[0], fields[1], dims, options.get("stat", props.get("stat"))))
            for search in re.findall(r"SEARCH\(\s*'((?:[^'\\]|\\.)*)'\s*,\s*'([^']*)'", options.get("expression", "")):
                query, stat = search
                schema = re.match(r"\s*\{([^}]*)\}", query)
                if not schema:
                    uses.append(MetricUse(title, "", "", {}, stat))
                    continue
                namespace, *keys = [k.strip().strip('"') for k in schema.group(1).split(",")]
                terms = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', query[schema.end():]))
                name = terms.pop("MetricName", "")
                dims = {k: None for k in keys}
                dims.update(terms)
                uses.append(MetricUse(title + " SEARCH", namespace, name, dims, stat))
    return uses


def alarm_uses(lid: str, props: dict) -> list[MetricUse]:
    def one(where, metric, stat):
        dims = {d.get("Name"): render(d.get("Value"), True) for d in metric.get("Dimensions") or []}
        return MetricUse(where, render(metric.get("Namespace", ""), True), metric.get("MetricName", ""), dims, stat)

    if "MetricName" in props:
        return [one(lid, props, props.get("ExtendedStatistic") or props.get("Statistic"))]
    return [
        one(f"{lid}.{m.get('Id')}", m["MetricStat"].get("Metric") or {}, m["MetricStat"].get("Stat"))
        for m in props.get("Metrics") or []
        if m.get("MetricStat")
    ]


def check_metric_use(use: MetricUse, namespace: str, declared: dict, emf: dict, table: dict) -> list[str]:
    """A metric the template reads in the functions' namespace: declared, with exactly its
    dimensions, and values its labels take."""
    if use.namespace != namespace:
        if use.namespace.startswith("AWS/"):
            return []
        return [f"{use.where}: namespace {use.namespace!r} is not the functions' ({namespace!r}, RELAY_METRICS_NAMESPACE)"]
    metric = declared.get(use.name)
    if metric is None:
        return [f"{use.where}: {use.name!r} is not a metric of shared::metrics::ALL"]
    errors = []
    if set(use.dimensions) != set(metric["dimensions"]):
        errors.append(
            f"{use.where}: {use.name} is written with the dimensions {sorted(metric['dimensions'])}, "
            f"read with {sorted(use.dimensions)}"
        )
    route_function = {r["route_key"]: r["function"] for r in table["http"]}
    for key, value in use.dimensions.items():
        allowed = emf["labels"].get(key, [])
        if value is None or allowed is None:
            continue
        if value not in allowed:
            errors.append(f"{use.where}: {use.name} {key}={value!r} is not a value of the label {key}")
    function = use.dimensions.get(emf["dimension"])
    if function and function not in metric["functions"]:
        errors.append(f"{use.where}: the {function} function does not write {use.name} (written by {metric['functions']})")
    route, action = use.dimensions.get("route"), use.dimensions.get("action")
    if function and route in route_function and route_function[route] != function:
        errors.append(f"{use.where}: {route} is served by the {route_function[route]} function, not {function}")
    if function and action and function != table["websocket"]["function"]:
        errors.append(f"{use.where}: frames are handled by the {table['websocket']['function']} function, not {function}")
    if use.stat and metric["histogram"] is False and re.fullmatch(r"p\d+(\.\d+)?", use.stat):
        errors.append(f"{use.where}: {use.name} is a {metric['kind']}, it has no percentile {use.stat}")
    return errors


def check_metrics(resources: dict, globals_env: dict, table: dict) -> list[str]:
    errors: list[str] = []
    emf = table["metrics"]
    declared = {m["name"]: m for m in emf["metrics"]}
    ns_value = globals_env.get(emf["namespace_setting"])
    if ns_value is None:
        return [f"Globals.Function.Environment.Variables lacks {emf['namespace_setting']} (the dashboard and alarms read it)"]
    namespace = render(ns_value, True)
    if "<AWS::StackName>" not in namespace:
        errors.append(f"{emf['namespace_setting']} must name the stack (two stacks in one account keep their metrics apart)")
    uses: list[MetricUse] = []
    dashboards = [lid for lid, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    if not dashboards:
        errors.append("the template needs an AWS::CloudWatch::Dashboard")
    for lid in dashboards:
        body_node = (resources[lid].get("Properties") or {}).get("DashboardBody")
        for conditions in (True, False):
            try:
                body = json.loads(render(body_node, conditions))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                errors.append(f"{lid}: DashboardBody is not JSON with its conditions {conditions}: {e}")
                continue
            if conditions:
                uses += dashboard_uses(lid, body)
    alarms = {lid: r.get("Properties") or {} for lid, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
    alarm_metrics = {lid: alarm_uses(lid, props) for lid, props in alarms.items()}
    for lid, props in alarms.items():
        uses += alarm_metrics[lid]
        if props.get("AlarmActions") != ALARM_ACTIONS:
            errors.append(f"{lid}: AlarmActions must be !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]")
    for use in uses:
        errors += check_metric_use(use, namespace, declared, emf, table)

    def alarmed(predicate) -> list[tuple[str, MetricUse]]:
        return [(lid, u) for lid, us in alarm_metrics.items() for u in us if predicate(u)]

    for name, label, value, bound in OBJECTIVES:
        found = alarmed(lambda u: u.namespace == namespace and u.name == name and u.dimensions.get(label) == value and u.stat == "p95")
        if not any(
            alarms[lid].get("ComparisonOperator") == "GreaterThanThreshold" and float(alarms[lid].get("Threshold", 1e9)) <= bound
            for lid, _ in found
        ):
            errors.append(f"no alarm on the p95 of {name} {label}={value!r} above at most {bound} s (an objective)")
    for lid, res in resources.items():
        if res.get("Type") == "AWS::Serverless::Function":
            for metric in ("Errors", "Throttles"):
                if not alarmed(lambda u: u.namespace == "AWS/Lambda" and u.name == metric and u.dimensions.get("FunctionName") == f"<{lid}>"):
                    errors.append(f"no alarm on AWS/Lambda {metric} of {lid}")
        if res.get("Type") == "AWS::DynamoDB::Table":
            for metric in ("ReadThrottleEvents", "WriteThrottleEvents"):
                if not alarmed(lambda u: u.namespace == "AWS/DynamoDB" and u.name == metric and u.dimensions.get("TableName") == f"<{lid}>"):
                    errors.append(f"no alarm on AWS/DynamoDB {metric} of {lid}")
    if not alarmed(lambda u: u.namespace == "AWS/ApiGateway" and u.name == "5xx" and u.dimensions.get("ApiId") == "<HttpApi>"):
        errors.append("no alarm on the HTTP API's 5xx (AWS/ApiGateway 5xx, ApiId HttpApi)")
    return errors


def check(template: dict, table: dict) -> list[str]:
    errors: list[str] = []
    HTTP_ROUTES: dict[str, set[str]] = {}
    for r in table["http"]:
        HTTP_ROUTES.setdefault(logical_id_of(r["function"]), set()).add(r["route_key"])
    BINARIES = {logical_id_of(f): f for f in table["functions"]}
    WS_ROUTES = set(table["websocket"]["routes"])
    if logical_id_of(table["websocket"]["function"]) != "ConnectionFunction":
        errors.append("the WebSocket routes must be the connection function's")
    resources = plain(template.get("Resources") or {})
    globals_fn = plain((template.get("Globals") or {}).get("Function") or {})

    def fn_prop(props: dict, key: str):
        return props.get(key, globals_fn.get(key))

    # Functions: build, runtime, architecture, handler.
    for logical_id, binary in BINARIES.items():
        res = resources.get(logical_id)
        if not res or res.get("Type") != "AWS::Serverless::Function":
            errors.append(f"{logical_id}: missing or not an AWS::Serverless::Function")
            continue
        meta, props = res.get("Metadata") or {}, res.get("Properties") or {}
        if meta.get("BuildMethod") != "rust-cargolambda":
            errors.append(f"{logical_id}: Metadata.BuildMethod must be rust-cargolambda")
        if (meta.get("BuildProperties") or {}).get("Binary") != binary:
            errors.append(f"{logical_id}: Metadata.BuildProperties.Binary must be {binary!r}")
        if props.get("CodeUri") != f"../functions/{binary}":
            errors.append(f"{logical_id}: CodeUri must be ../functions/{binary}")
        for key, want in (("Runtime", "provided.al2023"), ("Handler", "bootstrap"), ("Architectures", ["arm64"])):
            if fn_prop(props, key) != want:
                errors.append(f"{logical_id}: {key} must be {want!r}, found {fn_prop(props, key)!r}")

    # Environment the code reads.
    env = ((globals_fn.get("Environment") or {}).get("Variables")) or {}
    for name in sorted(GLOBAL_ENV - set(env)):
        errors.append(f"Globals.Function.Environment.Variables lacks {name}")
    # ElastiCache Serverless is only offered in cluster mode: the functions must route by slot.
    cluster = env.get("REDIS_CLUSTER")
    if not (isinstance(cluster, dict) and (cluster.get("Fn::If") or [None, None])[:2] == ["UseServerlessRedis", "true"]):
        errors.append('REDIS_CLUSTER must be "true" when UseServerlessRedis (ElastiCache Serverless is a cluster)')
    # Secrets are read by the functions at cold start: the configuration holds ids, never values.
    if "JWT_SECRET" in env:
        errors.append("JWT_SECRET must not be in the functions' environment (set JWT_SECRET_ID)")
    if env.get("JWT_SECRET_ID") != {"Ref": "JwtSecretId"}:
        errors.append("JWT_SECRET_ID must be the JwtSecretId parameter")
    for logical_id, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        role = ((res.get("Properties") or {}).get("Role") or {}).get("Fn::GetAtt", [None])[0]
        policies = json.dumps(((resources.get(role) or {}).get("Properties") or {}).get("Policies"))
        if "secretsmanager:GetSecretValue" not in policies or "${JwtSecretId}-??????" not in policies:
            errors.append(f"{logical_id}: its role must be allowed GetSecretValue on the JWT secret only")
    # Every variable the template sets is one the code declares (shared/src/config/settings.rs
    # and rate_limits.rs): a misspelt name would be ignored and its default used silently.
    declared = set(table.get("settings") or [])
    if declared:
        for logical_id, res in [("Globals.Function", globals_fn)] + [
            (k, v.get("Properties") or {}) for k, v in resources.items()
            if v.get("Type") == "AWS::Serverless::Function"
        ]:
            variables = ((res.get("Environment") or {}).get("Variables")) or {}
            for name in sorted(set(variables) - declared):
                errors.append(f"{logical_id} sets {name}, which the code does not read")
    for function, names in FUNCTION_ENV.items():
        if function not in BINARIES:
            continue
        fn_env = (((resources.get(function) or {}).get("Properties") or {}).get("Environment") or {}).get(
            "Variables"
        ) or {}
        for name in sorted(names - set(fn_env)):
            errors.append(f"{function} lacks {name}")
    if ATTACHMENTS_FUNCTION in BINARIES:
        errors += check_attachments(resources)
    if "metrics" in table:
        errors += check_metrics(resources, env, table)
    else:
        errors.append("the route table JSON has no `metrics` (relay-routes prints them)")

    # HTTP API routes: exactly the route table's, each on the right function, all on one HttpApi.
    seen: dict[str, str] = {}
    for logical_id, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        for event_id, event in ((res.get("Properties") or {}).get("Events") or {}).items():
            if event.get("Type") != "HttpApi":
                continue
            p = event.get("Properties") or {}
            key = f"{str(p.get('Method', '')).upper()} {p.get('Path')}"
            if key in seen:
                errors.append(f"route {key} defined twice ({seen[key]}, {logical_id})")
            seen[key] = logical_id
            if p.get("ApiId") != {"Ref": "HttpApi"}:
                errors.append(f"{logical_id}.{event_id}: ApiId must be !Ref HttpApi")
            if p.get("PayloadFormatVersion", "2.0") != "2.0":
                errors.append(f"{logical_id}.{event_id}: payload format must be 2.0")
    for fn, keys in HTTP_ROUTES.items():
        for key in sorted(keys):
            if seen.get(key) != fn:
                errors.append(f"route {key} must go to {fn}, found {seen.get(key)}")
    for key in sorted(set(seen) - set().union(*HTTP_ROUTES.values())):
        errors.append(f"route {key} ({seen[key]}) is not in the route table (shared::routes)")

    # WebSocket API.
    apis = [r for r in resources.values() if r.get("Type") == "AWS::ApiGatewayV2::Api"]
    ws = [a for a in apis if (a.get("Properties") or {}).get("ProtocolType") == "WEBSOCKET"]
    if len(ws) != 1 or ws[0]["Properties"].get("RouteSelectionExpression") != "$request.body.action":
        errors.append("need one WebSocket API with RouteSelectionExpression $request.body.action")
    routes = {
        (r.get("Properties") or {}).get("RouteKey"): lid
        for lid, r in resources.items()
        if r.get("Type") == "AWS::ApiGatewayV2::Route"
    }
    if set(routes) != WS_ROUTES:
        errors.append(f"WebSocket routes must be {sorted(WS_ROUTES)}, found {sorted(routes)}")
    default_id = routes.get("$default")
    if default_id:
        if resources[default_id]["Properties"].get("RouteResponseSelectionExpression") != "$default":
            errors.append("$default route needs RouteResponseSelectionExpression $default")
        if not any(
            r.get("Type") == "AWS::ApiGatewayV2::RouteResponse"
            and (r.get("Properties") or {}).get("RouteId") == {"Ref": default_id}
            and r["Properties"].get("RouteResponseKey") == "$default"
            for r in resources.values()
        ):
            errors.append("$default route needs an AWS::ApiGatewayV2::RouteResponse with key $default")
    integrations = [r for r in resources.values() if r.get("Type") == "AWS::ApiGatewayV2::Integration"]
    if not integrations or any(
        "ConnectionFunction.Arn" not in json.dumps(i["Properties"].get("IntegrationUri"))
        or i["Properties"].get("IntegrationType") != "AWS_PROXY"
        for i in integrations
    ):
        errors.append("WebSocket integrations must be AWS_PROXY to ConnectionFunction")
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=HERE / "template.yaml")
    parser.add_argument("--routes", type=Path, default=None, help="route table JSON (default: relay-routes)")
    args = parser.parse_args(argv)
    from cfnlint.decode import cfn_yaml

    table = load_routes(args.routes)
    errors = check(cfn_yaml.load(str(args.template)), table)
    if errors:
        print(f"check_contract: {args.template} does not match what the functions expect:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(
        f"check_contract: {len(table['http'])} HTTP routes, {len(table['websocket']['routes'])} WebSocket routes, "
        f"{len(table['functions'])} functions as the route table says; the dashboard and alarms read "
        f"only declared metrics ({len(table['metrics']['metrics'])}), every objective has its alarm"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
