"""The DAW machine's thin client (issue 27): the project's wheel installed WITHOUT extras into a fresh venv
with no torch, offline from the wheels `./dev setup` downloads (`.cache/client-wheels`), then README's
"On the DAW machine" commands run line by line from that venv against a tiny server of the full
environment: `keys import`, `jobs`, the OSC bridge; plus `generate`, `ask` and `edit`, and the message a
server-side command gives there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from test_osc_fake_server import OscPeer

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".cache" / "client-wheels"
SECTION = "## On the DAW machine"
GPU_HOST = "tcp://gpu-box.local:5557"


def client_requirements() -> str:
    """What `./dev setup_client_wheels` downloads: the base dependencies and the build backend."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the copy pip carries (as ./dev reads it)
        from pip._vendor import tomli as tomllib

    p = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return "\n".join(p["project"]["dependencies"] + p["build-system"]["requires"])


def readme_block(lang: str) -> list[str]:
    """The command lines of the ```lang block in README's DAW-machine section (comments dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    block = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert block, f"README's {SECTION!r} has no ```{lang} block"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def offline_env(home: Path, extra_path: Path | None = None) -> dict[str, str]:
    """A DAW machine's user: its own HOME (so platformdirs gives ~/.config/m2ugen), no project on the
    path, pip offline from the cached wheels only (no config file: no other index or folder)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("M2UGEN_", "PIP_", "PYTHON", "VIRTUAL_ENV", "XDG_"))}
    env.update(HOME=str(home), PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    if extra_path is not None:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """README's bash block up to (not including) the bridge, run in a fresh HOME: returns (env, venv bin,
    home, the block's `m2ugen` lines, the GPU machine's keys dir). The wheel is built from a copy of the sources (no build/ in the checkout)."""
    stamp = WHEELS / ".requirements"
    if not stamp.is_file() or stamp.read_text().strip() != client_requirements().strip():
        pytest.fail(f"the client's dependency wheels are missing or out of date in {WHEELS}: run ./dev setup "
                    f"(it downloads them once; this test installs offline)")
    tmp = tmp_path_factory.mktemp("thin")
    src, dist, home = tmp / "src", tmp / "Downloads", tmp / "home"
    src.mkdir(), home.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("m2ugen", "server", "bridge_osc"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    bin_dir = tmp / "bin"  # `python3` of README is this Python (its wheels are the cached ones)
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = offline_env(home, bin_dir)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=300, env=env)
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("m2ugen-*.whl"))

    # the GPU machine's keys, copied into ~/Downloads/m2ugen-keys as README says (never server.key_secret)
    gpu_keys = tmp / "gpu-config"
    made = subprocess.run([sys.executable, "-m", "server.cli", "keys"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "M2UGEN_CONFIG_DIR": str(gpu_keys), "PYTHONPATH": str(ROOT)})
    assert made.returncode == 0, made.stderr
    (home / "Downloads" / "m2ugen-keys").mkdir(parents=True)
    for name in ("server.key", "client.key", "client.key_secret"):
        shutil.copy(gpu_keys / "keys" / name, home / "Downloads" / "m2ugen-keys" / name)

    lines = readme_block("bash")
    install = [line for line in lines if not line.startswith("m2ugen ")]
    assert any(wheel.name in line for line in install), f"README installs another wheel than {wheel.name}"
    script = "set -euo pipefail\n" + "\n".join(install) + "\ncommand -v m2ugen\n"
    done = subprocess.run(["bash", "-c", script], cwd=dist, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    venv_bin = Path(done.stdout.strip().splitlines()[-1]).parent
    assert home in venv_bin.parents, venv_bin
    env["PATH"] = f"{venv_bin}{os.pathsep}{env['PATH']}"
    return env, venv_bin, home, [line for line in lines if line.startswith("m2ugen ")], gpu_keys / "keys"


def run_line(line: str, env, endpoint: str, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line.replace(GPU_HOST, endpoint)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=env["HOME"])


def test_the_client_installs_without_torch_or_the_model(client):
    env, venv_bin, _, _, _ = client
    probe = ("import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
             "('torch', 'transformers', 'librosa', 'scipy', 'PIL', 'zmq', 'pythonosc', 'numpy', 'soundfile')}))")
    found = json.loads(subprocess.run([str(venv_bin / "python"), "-c", probe], capture_output=True, text=True,
                                      env=env, timeout=60, check=True, cwd=env["HOME"]).stdout)
    assert found == {"torch": False, "transformers": False, "librosa": False, "scipy": False, "PIL": False,
                     "zmq": True, "pythonosc": True, "numpy": True, "soundfile": True}
    imported = subprocess.run([str(venv_bin / "python"), "-c", "import torch"], capture_output=True, text=True,
                              env=env, timeout=60, cwd=env["HOME"])
    assert imported.returncode != 0 and "No module named 'torch'" in imported.stderr
    # the installed m2ugen is the wheel's, not the checkout's
    where = subprocess.run([str(venv_bin / "python"), "-c", "import server; print(server.__file__)"],
                           capture_output=True, text=True, env=env, timeout=60, check=True, cwd=env["HOME"]).stdout
    assert str(venv_bin.parent) in where and str(ROOT) not in where


def test_a_server_side_command_says_which_extra_to_install(client):
    env, venv_bin, _, _, _ = client
    for argv in (["serve", "--port", "0"], ["chat", "hello"], ["transcribe", "--local", "--audio", "x.wav",
                                                                  "--out", "x.mid"]):
        p = subprocess.run([str(venv_bin / "m2ugen"), *argv], capture_output=True, text=True, env=env, timeout=60, cwd=env["HOME"])
        assert p.returncode == 4, (argv, p.stderr)
        assert 'pip install "m2ugen[server]"' in p.stderr and "Traceback" not in p.stderr, (argv, p.stderr)


def test_readme_keys_import_then_jobs_generate_ask_edit(client, server_info, tmp_path):
    env, venv_bin, home, lines, _ = client
    endpoint = server_info.endpoint
    keys_line = next(line for line in lines if line.startswith("m2ugen keys import"))
    p = run_line(keys_line, env, endpoint)
    assert p.returncode == 0, p.stderr
    keys = home / ".config" / "m2ugen" / "keys"  # platformdirs on Linux, as README's comment says
    assert sorted(x.name for x in keys.iterdir()) == ["client.key", "client.key_secret", "server.key"]
    assert (keys / "client.key_secret").stat().st_mode & 0o077 == 0

    # generate, ask, edit from the thin venv; the tiny model's tokens are capped so each job is short
    fast = ["--server", endpoint, "--max-new-tokens", "4", "--timeout", "120"]
    m2ugen = str(venv_bin / "m2ugen")
    out = tmp_path / "Zoë's take.wav"
    p = subprocess.run([m2ugen, "generate", "--prompt", "lofi piano", "--duration", "0.5", "--out", str(out), *fast],
                       capture_output=True, text=True, env=env, timeout=300, cwd=env["HOME"])
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert events[-1] == {"op": "exit", "code": 0} and events[-2]["op"] == "done"
    assert sf.info(out).frames > 0
    src = tmp_path / "my loop.wav"
    sf.write(src, sf.read(out)[0], sf.info(out).samplerate)
    p = subprocess.run([m2ugen, "ask", "--prompt", "what key is this?", "--audio", str(src), *fast],
                       capture_output=True, text=True, env=env, timeout=300, cwd=env["HOME"])
    assert p.returncode == 0, p.stderr
    asked = [json.loads(line) for line in p.stdout.splitlines()][-2]
    assert asked["op"] == "done" and asked["kind"] == "ask"
    edited = tmp_path / "edit.wav"
    p = subprocess.run([m2ugen, "edit", "--prompt", "more drums", "--audio", str(src), "--out", str(edited), *fast],
                       capture_output=True, text=True, env=env, timeout=300, cwd=env["HOME"])
    assert p.returncode == 0, p.stderr
    assert sf.info(edited).frames > 0

    jobs_line = next(line for line in lines if line.startswith("m2ugen jobs"))
    p = run_line(jobs_line, env, endpoint)
    assert p.returncode == 0, p.stderr
    listed = [json.loads(line) for line in p.stdout.splitlines()]
    kinds = sorted(e["kind"] for e in listed if e["op"] == "job")
    assert kinds == ["ask", "edit", "generate"], listed


def test_readme_bridge_serves_the_live_device(client, server_info):
    env, _, _, lines, _ = client
    bridge_line = next(line for line in lines if line.startswith("m2ugen bridge"))
    # README's line as is, on a free UDP port (the default 9100 may be taken on a shared machine)
    proc = subprocess.Popen(["bash", "-c", "exec " + bridge_line.replace(GPU_HOST, server_info.endpoint) + " --port 0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=env["HOME"])
    try:
        seen, match = "", None
        for line in proc.stderr:  # log lines, then the ready line (or the end: a bridge that failed)
            seen += line
            match = re.search(r"listening on udp 127\.0\.0\.1:(\d+)", line)
            if match:
                break
        assert match, seen
        peer = OscPeer(int(match.group(1)))
        try:
            peer.send("/m2u/hello", ("i", peer.port))
            peer.expect("/m2u/welcome", timeout=30)
            peer.send("/m2u/set", ("s", "max_new_tokens"), ("f", 4.0))
            peer.expect("/m2u/set", timeout=30)
            peer.send("/m2u/generate", ("s", "lofi piano"), ("f", 0.5))
            got = peer.expect("/m2u/done", timeout=240)
            assert not [m for m in got if m.address == "/m2u/error"], got
            assert [m for m in got if m.address == "/m2u/accepted"]
        finally:
            peer.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_imported_keys_authenticate_with_a_curve_server(client, make_server, tmp_path):
    """The GPU machine's CURVE server accepts the client whose keys README's `keys import` put in place; a
    machine without them gets exit 3 and the reason."""
    env, venv_bin, home, lines, gpu_keys = client
    srv = make_server(curve=True, keys_dir=gpu_keys)
    keys_line = next(line for line in lines if line.startswith("m2ugen keys import"))
    assert run_line(keys_line, env, srv.endpoint).returncode == 0
    # a loopback endpoint (the test's) names the server key explicitly; a remote one reads the imported server.key
    curve_env = {**env, "M2UGEN_SERVER_KEY": str(home / ".config" / "m2ugen" / "keys" / "server.key")}
    p = subprocess.run([str(venv_bin / "m2ugen"), "jobs", "--server", srv.endpoint], capture_output=True, text=True,
                       env=curve_env, timeout=60, cwd=home)
    assert p.returncode == 0, p.stderr
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    p = subprocess.run([str(venv_bin / "m2ugen"), "jobs", "--server", srv.endpoint], capture_output=True, text=True,
                       env={**curve_env, "HOME": str(stranger)}, timeout=60, cwd=stranger)
    assert p.returncode == 3 and "no CURVE client key" in p.stderr, p.stderr
