"""The client's platform-specific pieces with the platform simulated (issue 27): per-user config/keys dirs on
Windows, macOS and Linux (platformdirs, as README's "On the DAW machine" names them), `m2ugen keys import`
(key files written on Windows with CRLF, owner-only modes, refusals), the client's use of an imported
server key, and the message a server-side command gives on a client-only install."""

from __future__ import annotations

import importlib.util
import re
import stat
from pathlib import Path, PureWindowsPath
from types import SimpleNamespace

import platformdirs
import platformdirs.macos
import platformdirs.unix
import platformdirs.windows
import pytest

from m2ugen import paths
from server import security
from server.cli import main
from server.cli.common import missing_extra
from server.client import Client

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
USER = "Zoë Müller"  # a space and non-ASCII letters, as real Windows/macOS account names have


@pytest.fixture
def platform(monkeypatch):
    """simulate(name): platformdirs answers as on that platform, for a user named USER."""
    monkeypatch.delenv("M2UGEN_CONFIG_DIR", raising=False)
    monkeypatch.delenv("M2UGEN_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)

    def simulate(name: str) -> None:
        if name == "win32":
            folders = {"CSIDL_LOCAL_APPDATA": rf"C:\Users\{USER}\AppData\Local",
                       "CSIDL_APPDATA": rf"C:\Users\{USER}\AppData\Roaming"}
            monkeypatch.setattr(platformdirs.windows, "get_win_folder", lambda csidl: folders[csidl])
            monkeypatch.setattr(platformdirs, "PlatformDirs", platformdirs.windows.Windows)
        elif name == "darwin":
            monkeypatch.setenv("HOME", f"/Users/{USER}")
            monkeypatch.setattr(platformdirs, "PlatformDirs", platformdirs.macos.MacOS)
        else:
            monkeypatch.setenv("HOME", f"/home/{USER}")
            monkeypatch.setattr(platformdirs, "PlatformDirs", platformdirs.unix.Unix)
        monkeypatch.setattr("sys.platform", name)

    return simulate


def test_keys_dir_on_windows_is_the_one_readme_names(platform):
    platform("win32")
    keys = PureWindowsPath(str(security.default_keys_dir()))
    assert keys == PureWindowsPath(rf"C:\Users\{USER}\AppData\Local\m2ugen\m2ugen\keys")
    # README: `m2ugen keys import ...   # into $env:LOCALAPPDATA\m2ugen\m2ugen\keys`
    assert r"into $env:LOCALAPPDATA\m2ugen\m2ugen\keys" in README
    assert PureWindowsPath(str(paths.config_dir())).parts[-2:] == ("m2ugen", "m2ugen")


def test_keys_dir_on_macos_and_linux_is_the_one_readme_names(platform):
    platform("darwin")
    assert security.default_keys_dir() == Path(f"/Users/{USER}/Library/Application Support/m2ugen/keys")
    assert "into ~/Library/Application Support/m2ugen/keys" in README
    platform("linux")
    assert security.default_keys_dir() == Path(f"/home/{USER}/.config/m2ugen/keys")
    assert "Linux: ~/.config/m2ugen/keys" in README


def make_keys(tmp_path: Path) -> Path:
    server_dir = tmp_path / "gpu box" / "keys"
    security.create_keys(server_dir)
    return server_dir


def test_keys_written_on_windows_import_byte_for_byte(tmp_path):
    """zmq writes certificates in text mode: CRLF on Windows. The import copies bytes (no translation) and
    the keys load on any platform; the server's secret key is never copied."""
    src = make_keys(tmp_path)
    for f in src.glob("*.key*"):
        f.write_bytes(f.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    dest = tmp_path / "DAW machine" / "Zoë's keys"
    written = security.import_client_keys(src, dest)
    assert sorted(written) == ["client.key", "client.key_secret", "server.key"]
    assert not (dest / "server.key_secret").exists()
    for name, path in written.items():
        assert path.read_bytes() == (src / name).read_bytes() and b"\r\n" in path.read_bytes()
    public, secret = security.load_client_keys(dest)
    assert (public, secret) == tuple(security.zmq.auth.load_certificate(src / "client.key_secret"))
    assert security.load_public_key(dest / "server.key") == security.zmq.auth.load_certificate(src / "server.key")[0]
    # owner-only on POSIX (on Windows the modes are no-ops: the per-user profile ACL protects the folder)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / "client.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "server.key").stat().st_mode) == 0o644


def test_keys_import_refusals(tmp_path):
    src = make_keys(tmp_path)
    dest = tmp_path / "client"
    security.import_client_keys(src, dest)
    again = security.import_client_keys(src, dest)  # the same keys again: fine
    assert set(again) == {"server.key", "client.key", "client.key_secret"}
    other = make_keys(tmp_path / "other")
    with pytest.raises(security.SecurityError, match="already holds other keys.*--force"):
        security.import_client_keys(other, dest)
    assert security.import_client_keys(other, dest, force=True)["server.key"].read_bytes() == \
        (other / "server.key").read_bytes()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("server.key", "client.key"):
        (mixed / name).write_bytes((src / name).read_bytes())
    with pytest.raises(security.SecurityError, match="no client.key_secret"):
        security.import_client_keys(mixed, tmp_path / "c2")
    (mixed / "client.key_secret").write_bytes((other / "client.key_secret").read_bytes())
    with pytest.raises(security.SecurityError, match="not one key pair"):
        security.import_client_keys(mixed, tmp_path / "c2")
    (mixed / "client.key_secret").write_bytes((src / "client.key").read_bytes())  # a public key as the secret
    with pytest.raises(security.SecurityError, match="holds no secret key"):
        security.import_client_keys(mixed, tmp_path / "c2")
    assert not (tmp_path / "c2").exists()


def test_keys_import_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path / "config"))
    src = make_keys(tmp_path)
    assert main(["keys", "import"]) == 2
    assert main(["keys", "import", str(tmp_path / "nowhere")]) == 4
    assert "no server.key in" in capsys.readouterr().err
    assert main(["keys", "import", str(src)]) == 0
    assert (tmp_path / "config" / "keys" / "client.key_secret").is_file()
    # `keys DIR` without `import` is a usage error, not a new key pair
    assert main(["keys", "create", str(src)]) == 2
    with pytest.raises(SystemExit) as e:
        main(["keys", str(src)])
    assert e.value.code == 2


def test_the_client_uses_an_imported_server_key_for_a_remote_server_only(tmp_path, monkeypatch):
    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("M2UGEN_SERVER_KEY", raising=False)
    remote = SimpleNamespace(endpoint="tcp://gpu-box.local:5557")
    local = SimpleNamespace(endpoint="tcp://127.0.0.1:5557")
    assert Client._discovered_server_key(remote) is None  # nothing imported: plain
    src = make_keys(tmp_path)
    security.import_client_keys(src, tmp_path / "config" / "keys")
    expected = security.zmq.auth.load_certificate(src / "server.key")[0]
    assert Client._discovered_server_key(remote) == expected
    assert Client._discovered_server_key(local) is None


def test_server_side_commands_name_the_extra_on_a_client_only_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    for argv in (["serve", "--port", "0"], ["chat", "hi"], ["convert", "a", "b"], ["train", "--stage", "1", "--data", "d", "--out", "o", "--preset", "tiny"],
                 ["transcribe", "--local", "--audio", "a.wav", "--out", "a.mid"]):
        assert main(argv) == 4, argv
        err = capsys.readouterr().err
        assert re.search(r"no module named 'torch'.*pip install \"m2ugen\[server\]\"", err), (argv, err)
    # a module no extra brings is a real bug: its traceback is not hidden behind install advice
    assert missing_extra(ModuleNotFoundError("No module named 'numpy'", name="numpy")) is None
    assert 'm2ugen[server,train]' in missing_extra(ModuleNotFoundError("x", name="peft.tuners"))
    assert missing_extra(ImportError("cannot import name x", name="torch")) is None


def test_hand_edited_files_from_windows_notepad_read_as_written(tmp_path):
    """What a user edits by hand on Windows — a request file, a MIDI mapping, a clip's caption — may start
    with a UTF-8 byte-order mark and end lines with CRLF: read as the text written, not an error."""
    from server.cli.jobs import load_request
    from server.cli.learn import _expand
    from server.cli.midi import load_mapping

    notepad = lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8")  # noqa: E731
    req = tmp_path / "request.json"
    req.write_bytes(notepad('{\n  "prompt": "Zoë\'s strings",\n  "duration": 4\n}\n'))
    assert load_request(str(req)) == {"prompt": "Zoë's strings", "duration": 4}
    mapping = tmp_path / "midi.json"
    mapping.write_bytes(notepad('{\n  "port": "nanoKONTROL2",\n  "bindings": []\n}\n'))
    assert load_mapping(mapping)["port"] == "nanoKONTROL2"
    clip = tmp_path / "my loop.wav"
    clip.write_bytes(b"RIFF")
    clip.with_suffix(".txt").write_bytes(notepad("warm Rhodes, 90 bpm\n"))
    assert _expand([str(clip)]) == [{"path": str(clip), "caption": "warm Rhodes, 90 bpm"}]
