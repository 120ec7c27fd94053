#!/usr/bin/env bash
# Validates the deployment files without a Docker engine or a running systemd:
#   - docker-compose.yml through two real Compose parsers: docker-compose 1.29.2 (`config`,
#     the reference Python implementation: interpolation, schema, references) and
#     compose-spec 0.2.1 (Python bindings of the Rust `compose_spec` crate: the current
#     Compose Specification, strict about unknown keys), both from PyPI into .deps/compose-venv;
#   - every image in docker-compose.yml and every FROM of the Dockerfile pinned to a version
#     tag (no `latest`, no untagged);
#   - deploy/systemd/flowlogd.service with `systemd-analyze verify` (any warning fails) and
#     `systemd-analyze security --offline` (exposure at most 1.5), systemd installed from apt
#     when missing and possible;
#   - Grafana dashboards and provisioning files, Kibana saved objects, the demo's Prometheus
#     scrape config: parse, nested JSON strings parse, Grafana `schemaVersion` and Kibana
#     `coreMigrationVersion` / `typeMigrationVersion` pinned, every Grafana panel on a
#     provisioned data source;
#   - shell syntax of deploy/compose/seed.sh;
#   - deploy/kubernetes/*.yaml against the Kubernetes API schemas (kubernetes-validate --strict,
#     from PyPI into .deps/kube-venv).
# Field names used by the dashboards are checked against real documents by
# tests/deploy_files.rs (cargo test), not here.
#
# Idempotent; installs only what is missing (first run ~1.5 min for the PyPI packages,
# then a few seconds). Works with CI=true and no stdin. Exit status 0 only if all passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
DEPS="$ROOT/.deps"
VENV="$DEPS/compose-venv"
DOCKER_COMPOSE_VERSION=1.29.2
COMPOSE_SPEC_VERSION=0.2.1
START=$(date +%s)
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }

# ---------------------------------------------------------------------------------------
# Compose parsers (PyPI -> .deps/compose-venv)
# ---------------------------------------------------------------------------------------
venv_ok() {
    local site
    for site in "$VENV"/lib/python3*/site-packages; do
        [ -d "$site/docker_compose-$DOCKER_COMPOSE_VERSION.dist-info" ] \
            && [ -d "$site/compose_spec-$COMPOSE_SPEC_VERSION.dist-info" ] \
            && [ -x "$VENV/bin/docker-compose" ] && return 0
    done
    return 1
}

install_venv() {
    local log="$DEPS/compose-pip.log" constraint="$DEPS/compose-constraints.txt"
    venv_ok && return 0
    echo "check-deploy: installing docker-compose==$DOCKER_COMPOSE_VERSION and compose-spec==$COMPOSE_SPEC_VERSION into .deps/compose-venv" >&2
    : >"$log"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >>"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; return 1; }
    # docker-compose 1.29.2 needs PyYAML < 6, which only builds on Python 3.11 with Cython < 3
    # (PIP_CONSTRAINT reaches pip's isolated build environments too).
    echo 'cython<3' >"$constraint"
    if ! PIP_CONSTRAINT="$constraint" PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install \
        --quiet --no-input "docker-compose==$DOCKER_COMPOSE_VERSION" "compose-spec==$COMPOSE_SPEC_VERSION" \
        </dev/null >>"$log" 2>&1; then
        echo "check-deploy: pip install failed:" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
    venv_ok || { echo "check-deploy: packages installed but not found in $VENV" >&2; return 1; }
}

mkdir -p "$DEPS"
(
    if command -v flock >/dev/null; then
        flock -w 900 9 || { echo "check-deploy: timed out waiting for $DEPS/.compose-install.lock" >&2; exit 1; }
    fi
    install_venv
) 9>"$DEPS/.compose-install.lock"
PY="$VENV/bin/python"

echo "== docker-compose.yml"
# A scratch project directory keeps a developer's own .env out of the check.
resolved=$(mktemp)
trap 'rm -f "$resolved"; rm -rf "${sdroot:-}"' EXIT
if (cd "$ROOT" && env -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME "$VENV/bin/docker-compose" \
    --project-directory "$ROOT" -f docker-compose.yml config >"$resolved" 2>"$resolved.err"); then
    ok "docker-compose $DOCKER_COMPOSE_VERSION config accepts docker-compose.yml"
else
    fail "docker-compose config: $(cat "$resolved.err")"
fi
rm -f "$resolved.err"

if ! "$PY" - "$ROOT" "$resolved" <<'PY'; then failures=$((failures + 1)); fi
import os, re, sys, yaml
from compose_spec import PyCompose

root, resolved = sys.argv[1], sys.argv[2]
bad = 0
def fail(msg):
    global bad
    bad += 1
    print("FAIL: " + msg, file=sys.stderr)

text = open(os.path.join(root, "docker-compose.yml")).read()
try:
    c = PyCompose.from_yaml(text)
    c.validate()
    print("ok:   compose-spec (Rust compose_spec) parses and validates docker-compose.yml: "
          + ", ".join(c.service_names()))
except ValueError as e:
    fail(f"compose-spec: {e}")

def pinned(ref):
    """name[:tag][@digest] -> None if pinned, else the reason."""
    if "@sha256:" in ref:
        return None
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return "no tag"
    tag = last.split(":", 1)[1]
    if tag in ("latest", "") or "$" in tag:
        return f"tag {tag!r} is not a version"
    if not re.search(r"\d", tag):
        return f"tag {tag!r} is not a version"
    return None

try:
    services = (yaml.safe_load(open(resolved)) or {}).get("services") or {}
except Exception as e:
    services = {}
    fail(f"cannot read the resolved compose file: {e}")
for name, svc in services.items():
    image = svc.get("image")
    if not image:
        fail(f"service {name}: no `image` (services built from the Dockerfile need a tagged image name too)")
        continue
    why = pinned(image)
    if why:
        fail(f"service {name}: image {image}: {why}")
if services:
    print(f"ok:   {len(services)} compose services checked for pinned images")

stages = set()
for n, line in enumerate(open(os.path.join(root, "Dockerfile")), 1):
    m = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
    if not m:
        continue
    ref, alias = m.group(1), m.group(2)
    if ref not in stages:
        why = pinned(ref)
        if why:
            fail(f"Dockerfile:{n}: FROM {ref}: {why}")
    if alias:
        stages.add(alias)
print("ok:   Dockerfile base images pinned")

# Grafana: provisioning, then the dashboards (whose panels must use provisioned data sources)
gdir = os.path.join(root, "deploy/grafana")
import json
provisioned = set()
for dirpath, _, files in os.walk(os.path.join(gdir, "provisioning")):
    for f in sorted(files):
        p = os.path.join(dirpath, f)
        try:
            y = yaml.safe_load(open(p))
            assert isinstance(y, dict) and y.get("apiVersion") == 1, "apiVersion 1 expected"
            for ds in y.get("datasources") or []:
                assert ds.get("uid") and ds.get("type"), f"data source {ds.get('name')!r} without uid or type"
                provisioned.add((ds["type"], ds["uid"]))
            print(f"ok:   {os.path.relpath(p, root)} parses")
        except Exception as e:
            fail(f"{p}: {e}")
for dirpath, _, files in os.walk(os.path.join(gdir, "dashboards")):
    for f in sorted(files):
        p = os.path.join(dirpath, f)
        if not f.endswith(".json"):
            continue
        try:
            d = json.load(open(p))
        except Exception as e:
            fail(f"{p}: {e}"); continue
        if not isinstance(d.get("schemaVersion"), int):
            fail(f"{p}: schemaVersion missing or not an integer")
        if not d.get("uid"):
            fail(f"{p}: no fixed uid")
        for panel in d.get("panels", []):
            for t in panel.get("targets", []):
                ds = t.get("datasource") or {}
                if (ds.get("type"), ds.get("uid")) not in provisioned:
                    fail(f"{p}: panel {panel.get('title')!r} uses data source {ds}, which deploy/grafana/provisioning does not define")
        print(f"ok:   {os.path.relpath(p, root)}: schemaVersion {d.get('schemaVersion')}, {len(d.get('panels', []))} panels")

# Prometheus of the demo stack: its scrape config parses and names a target
pp = os.path.join(root, "deploy/compose/prometheus.yml")
try:
    y = yaml.safe_load(open(pp))
    targets = [t for job in y["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets, "no scrape target"
    print(f"ok:   {os.path.relpath(pp, root)} parses, scrapes {', '.join(targets)}")
except Exception as e:
    fail(f"{pp}: {e}")

# Kibana saved objects
kp = os.path.join(root, "deploy/kibana/flowlogd.ndjson")
count = 0
for n, line in enumerate(open(kp), 1):
    if not line.strip():
        continue
    count += 1
    try:
        o = json.loads(line)
    except Exception as e:
        fail(f"{kp}:{n}: {e}"); continue
    for key in ("coreMigrationVersion", "typeMigrationVersion"):
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(o.get(key, ""))):
            fail(f"{kp}:{n} ({o.get('type')} {o.get('id')}): {key} missing or not pinned")
    a = o.get("attributes", {})
    nested = [a.get("visState"), a.get("panelsJSON"), a.get("optionsJSON"), a.get("fieldFormatMap"),
              (a.get("kibanaSavedObjectMeta") or {}).get("searchSourceJSON")]
    for s in nested:
        if s is not None:
            try:
                json.loads(s)
            except Exception as e:
                fail(f"{kp}:{n} ({o.get('id')}): nested JSON does not parse: {e}")
    ids = {r["id"] for r in o.get("references", [])}
    if o.get("type") == "dashboard":
        names = {r["name"] for r in o.get("references", [])}
        for panel in json.loads(a.get("panelsJSON", "[]")):
            if panel.get("panelRefName") not in names:
                fail(f"{kp}: dashboard panel {panel.get('panelIndex')} has no reference {panel.get('panelRefName')!r}")
print(f"ok:   {os.path.relpath(kp, root)}: {count} saved objects, migration versions pinned")
sys.exit(1 if bad else 0)
PY

echo "== shell"
if bash -n deploy/compose/seed.sh; then ok "deploy/compose/seed.sh syntax"; else fail "deploy/compose/seed.sh syntax"; fi

# ---------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------
echo "== deploy/systemd/flowlogd.service"
if ! command -v systemd-analyze >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "check-deploy: installing systemd (for systemd-analyze) with apt-get" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd; } \
            </dev/null >"$DEPS/apt-systemd.log" 2>&1 || tail -n 20 "$DEPS/apt-systemd.log" >&2
    fi
fi
if command -v systemd-analyze >/dev/null; then
    # verify needs the unit's ExecStart binary and the targets it names: a scratch root
    # holds the system's units, the unit under test and a stand-in /usr/local/bin/flowlogd.
    sdroot=$(mktemp -d)
    mkdir -p "$sdroot/etc/systemd/system" "$sdroot/usr/lib/systemd" "$sdroot/usr/local/bin"
    for d in /usr/lib/systemd/system /lib/systemd/system; do
        [ -d "$d" ] && { cp -a "$d" "$sdroot/usr/lib/systemd/"; break; }
    done
    printf '#!/bin/sh\nexit 0\n' >"$sdroot/usr/local/bin/flowlogd"
    chmod 0755 "$sdroot/usr/local/bin/flowlogd"
    cp deploy/systemd/flowlogd.service "$sdroot/etc/systemd/system/"
    # verify exits 0 on unknown keys and bad values (it only warns): any output fails.
    if out=$(cd "$sdroot" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --root="$sdroot" flowlogd.service 2>&1) \
        && [ -z "$out" ]; then
        ok "systemd-analyze verify ($(systemd-analyze --version | head -n1))"
    else
        fail "systemd-analyze verify: ${out:-exit status non-zero}"
    fi
    if sec=$(systemd-analyze security --offline=true --threshold=15 deploy/systemd/flowlogd.service 2>&1); then
        ok "systemd-analyze security: $(printf '%s\n' "$sec" | grep -o 'Overall exposure level.*' | sed 's/ [^ ]*$//')"
    else
        fail "systemd-analyze security: exposure above 1.5: $(printf '%s\n' "$sec" | grep 'Overall exposure' || printf '%s' "$sec" | tail -n 5)"
    fi
else
    echo "SKIPPED: systemd-analyze is not available here and could not be installed: the unit file was NOT verified" >&2
fi

# ---------------------------------------------------------------------------------------
# Kubernetes manifests: kubernetes-validate (PyPI; it bundles the API's JSON schemas, so it
# works offline) in its own venv, since its jsonschema and PyYAML clash with docker-compose's.
# ---------------------------------------------------------------------------------------
echo "== deploy/kubernetes"
KUBE_VENV="$DEPS/kube-venv"
KUBE_VALIDATE_VERSION=1.37.0
(
    if command -v flock >/dev/null; then
        flock -w 900 9 || exit 1
    fi
    if ! [ -x "$KUBE_VENV/bin/kubernetes-validate" ]; then
        echo "check-deploy: installing kubernetes-validate==$KUBE_VALIDATE_VERSION into .deps/kube-venv" >&2
        { [ -x "$KUBE_VENV/bin/python" ] || python3 -m venv "$KUBE_VENV"; } \
            && PIP_DISABLE_PIP_VERSION_CHECK=1 "$KUBE_VENV/bin/python" -m pip install --quiet \
                --no-input "kubernetes-validate==$KUBE_VALIDATE_VERSION" </dev/null >"$DEPS/kube-pip.log" 2>&1 \
            || { tail -n 30 "$DEPS/kube-pip.log" >&2; exit 1; }
    fi
) 9>"$DEPS/.kube-install.lock" || fail "kubernetes-validate could not be installed"
for manifest in deploy/kubernetes/*.yaml; do
    if out=$("$KUBE_VENV/bin/kubernetes-validate" --strict --quiet "$manifest" 2>&1); then
        ok "$manifest (kubernetes-validate --strict, Kubernetes $KUBE_VALIDATE_VERSION schemas)"
    else
        fail "$manifest: $out"
    fi
done

echo "== check-deploy: $failures failure(s) in $(($(date +%s) - START))s"
[ "$failures" -eq 0 ]
