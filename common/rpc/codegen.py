"""Generate the Python code of the TaskService from proto/, with grpcio-tools.

    python -m common.rpc.codegen            # write common/rpc/gen/ (make setup runs it)
    python -m common.rpc.codegen --check    # exit 1 if common/rpc/gen/ is stale

Generated code is built, not kept: `common/rpc/gen/` is gitignored, and `make setup` (and the
Dockerfile) run this before anything imports it. protoc names a generated module after its
proto path, so `task_service_pb2_grpc.py` says `from tasklab.v1 import task_service_pb2`, an
import only a top-level `tasklab` package would satisfy; the one rewrite below makes it a
relative import, so the code lives inside `common.rpc.gen`. Output is byte-for-byte
reproducible for one grpcio-tools version, which is what the freshness check compares.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
PROTOS = ("tasklab/v1/task_service.proto",)
OUT = Path(__file__).resolve().parent / "gen"

_INIT = '"""Generated from proto/ by `python -m common.rpc.codegen`: do not edit."""\n'


def generate(out: Path) -> list[Path]:
    """Write the generated modules (flat, one package) into `out`; return their paths."""
    from grpc_tools import protoc  # a build tool: imported only when generating

    wkt = Path(protoc.__file__).resolve().parent / "_proto"  # google/protobuf/*.proto
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{wkt}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *(str(PROTO_ROOT / p) for p in PROTOS),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed ({code}) on {', '.join(PROTOS)}")
        written = [out / "__init__.py"]
        written[0].write_text(_INIT)
        for proto in PROTOS:
            package = Path(proto).parent  # tasklab/v1
            dotted = ".".join(package.parts)
            for made in sorted((Path(tmp) / package).iterdir()):
                text = made.read_text()
                text = text.replace(f"from {dotted} import ", "from . import ")
                target = out / made.name
                target.write_text(text)
                written.append(target)
    return written


def stale(out: Path = OUT) -> list[str]:
    """The generated files that differ from what the .proto makes now (missing ones too)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        problems = []
        for path in fresh:
            have = out / path.name
            if not have.exists():
                problems.append(f"{have} is missing")
            elif have.read_bytes() != path.read_bytes():
                problems.append(f"{have} differs from what {', '.join(PROTOS)} generates")
        return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale code")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for line in problems:
            print(f"stale: {line}", file=sys.stderr)
        if problems:
            print("run `python -m common.rpc.codegen` (or `make setup`)", file=sys.stderr)
        return 1 if problems else 0
    if OUT.exists():
        shutil.rmtree(OUT)
    for path in generate(OUT):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
