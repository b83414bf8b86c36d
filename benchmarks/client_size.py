"""Installed size of the DAW machine's client (the wheel without extras, with its dependencies) vs this full
environment (the model, `serve`, training, tests). Target: the client under 100 MB.

The client is installed the way tests/test_thin_client.py does it: the project's wheel into a fresh venv,
offline from the wheels `./dev setup` downloads into .cache/client-wheels. Sizes are the bytes of the files
each installed distribution lists (its RECORD), so pip/setuptools of the venv itself are shown apart.

    .venv/bin/python benchmarks/client_size.py [--venv DIR (an existing client venv)] [--top 12]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".cache" / "client-wheels"
TOOLING = {"pip", "setuptools", "wheel"}  # what every venv brings, not the client's

# run inside an environment: {distribution: bytes of its installed files}
SIZES = r"""
import json, os
from importlib import metadata
out = {}
for d in metadata.distributions():
    total = 0
    for f in d.files or ():
        try:
            total += os.path.getsize(d.locate_file(f))
        except OSError:
            pass
    out[d.metadata["Name"]] = out.get(d.metadata["Name"], 0) + total
print(json.dumps(out))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH & co (a checkout on the path would count as installed)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}, **extra}


def sizes(python: Path | str) -> dict[str, int]:
    p = subprocess.run([str(python), "-c", SIZES], capture_output=True, text=True, check=True, env=clean_env(),
                       cwd=tempfile.gettempdir())
    return json.loads(p.stdout)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def make_client_venv(where: Path) -> Path:
    """Build the wheel from a copy of the sources and install it, no extras, offline. Returns the venv's python."""
    if not WHEELS.is_dir():
        sys.exit(f"no client wheels in {WHEELS}: run ./dev setup first")
    env = clean_env(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS),
                    PIP_DISABLE_PIP_VERSION_CHECK="1")
    src = where / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("m2ugen", "server", "bridge_osc"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where / "dist"), str(src)],
                   check=True, env=env)
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True, env=env)
    python = venv_python(where / "venv")
    wheel = next((where / "dist").glob("m2ugen-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, env=env)
    return python


def mb(n: int) -> str:
    return f"{n / 1e6:8.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, help="an existing client venv to measure (default: build one)")
    ap.add_argument("--top", type=int, default=12, help="largest distributions to list (default 12)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        python = venv_python(args.venv) if args.venv else make_client_venv(Path(tmp))
        client = sizes(python)
    full = sizes(sys.executable)
    client_total = sum(v for k, v in client.items() if k.lower() not in TOOLING)
    full_total = sum(v for k, v in full.items() if k.lower() not in TOOLING)
    print(f"client (m2ugen without extras, fresh venv): {len(client)} distributions")
    for name, n in sorted(client.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24}{mb(n)}{'   (venv tooling, not counted)' if name.lower() in TOOLING else ''}")
    print(f"full environment ({sys.prefix}): {len(full)} distributions; largest {args.top}:")
    for name, n in sorted(full.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {name:<24}{mb(n)}")
    print(f"client total {mb(client_total).strip()}  vs full {mb(full_total).strip()}  "
          f"(ratio {client_total / full_total:.3f}; target client < 100 MB: "
          f"{'met' if client_total < 100e6 else 'NOT met'})")


if __name__ == "__main__":
    main()
