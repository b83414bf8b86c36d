"""Commands that need no server: ``where`` (the discovery file), ``keys`` (CURVE keys), ``chat`` (the
model in this process) and ``convert`` (an official checkpoint to the trained tensors only)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from server import discovery, protocol
from server.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, die, finite_float


def cmd_where(args) -> int:
    info = discovery.read()
    if info is None:
        print(f"m2ugen: no discovery file at {discovery.discovery_path()} (the server writes it when it starts)",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(info, indent=2))
    return EXIT_OK


def cmd_keys(args) -> int:
    from server import security

    keys_dir = Path(args.dir).expanduser() if args.dir else security.default_keys_dir()
    if args.action == "import":
        return _import_keys(args, keys_dir)
    if args.source is not None:
        return die(None, EXIT_USAGE, f"unexpected argument {args.source!r} (did you mean `m2ugen keys import DIR`?)")
    try:
        paths = security.create_keys(keys_dir, force=args.force)
    except security.SecurityError as e:
        print(f"m2ugen: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    print(f"Keys written to {keys_dir}. Start the server on a network address with `m2ugen serve --host 0.0.0.0`; "
          f"copy server.key, client.key and client.key_secret (never server.key_secret) to the client machine "
          f"and run `m2ugen keys import FOLDER` there.", file=sys.stderr)
    return EXIT_OK


def _import_keys(args, keys_dir: Path) -> int:
    """``m2ugen keys import DIR`` on a client machine: the three files copied from the server's keys dir."""
    from server import security

    if args.source is None:
        return die(None, EXIT_USAGE, "keys import needs the folder holding server.key, client.key and client.key_secret")
    try:
        paths = security.import_client_keys(Path(args.source).expanduser(), keys_dir, force=args.force)
    except security.SecurityError as e:
        return die(None, EXIT_FAILED, str(e))
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    print(f"Keys imported into {keys_dir}. Clients on this machine now use CURVE with any non-loopback server, "
          f"e.g. `m2ugen jobs --server tcp://GPU-HOST:5557`.", file=sys.stderr)
    return EXIT_OK


def cmd_chat(args) -> int:
    """The model in this process, no server: prints the reply, writes audio with --out."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from server.app import load_model

    if not 0 < args.duration <= 300:
        return die(None, EXIT_USAGE, f"--duration must be in (0, 300] seconds, got {args.duration:g}")
    try:
        model, info = load_model(args.preset, args.weights)
        want = {"auto": None, "yes": True, "no": False}[args.want_audio]
        reply = model.chat(args.prompt, audio=args.audio, image=args.image, video=args.video,
                           max_new_tokens=args.max_new_tokens or model.config.max_new_tokens, seed=args.seed,
                           conditioning=args.conditioning, duration_s=args.duration, want_audio=want)
    except (ValueError, OSError, ImportError) as e:
        return die(None, EXIT_FAILED, f"chat failed: {type(e).__name__}: {e}")
    result: dict[str, Any] = {"op": "reply", "text": reply.text, "seed": reply.seed, "model": info,
                              "timings": reply.timings, "audio_path": None}
    if reply.audio is not None and args.out:
        from server import audio_io

        out = Path(args.out).expanduser().absolute()
        audio_io.write_wav(out, audio_io.prepare_output(reply.audio, reply.sample_rate, reply.sample_rate,
                                                         reply.audio.shape[0], None), reply.sample_rate)
        result["audio_path"] = str(out)
    print(json.dumps(result, default=str))
    return EXIT_OK


def cmd_convert(args) -> int:
    try:
        from m2ugen import checkpoint

        out = checkpoint.convert_checkpoint(args.src, args.dst)
    except (ValueError, OSError, ImportError, KeyError) as e:
        return die(None, EXIT_FAILED, f"convert failed: {type(e).__name__}: {e}")
    print(json.dumps({"op": "converted", "src": args.src, "dst": args.dst, **(out or {})}, default=str))
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser("keys", help="create CURVE keys for non-loopback serving; `keys import DIR` on a client",
                       description="`m2ugen keys` on the server machine creates its keys; `m2ugen keys import DIR` on "
                                   "a client machine copies server.key, client.key and client.key_secret from DIR "
                                   "(copied there from the server's keys dir) into this machine's keys dir.")
    p.add_argument("action", nargs="?", choices=("create", "import"), default="create")
    p.add_argument("source", nargs="?", metavar="DIR", help="import: the folder holding the three key files")
    p.add_argument("--dir", metavar="DIR", help="keys dir (default <config dir>/keys)")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("where", help="print the discovery file (endpoint, CLI path, version)")
    p.set_defaults(func=cmd_where)

    p = sub.add_parser("chat", help="run the model in this process (no server) and print its reply")
    p.add_argument("prompt")
    p.add_argument("--audio", metavar="FILE")
    p.add_argument("--image", metavar="FILE")
    p.add_argument("--video", metavar="FILE")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--preset")
    m.add_argument("--weights", metavar="PATH")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--seed", type=int, help="random seed (default: random; the one used is printed)")
    p.add_argument("--duration", type=finite_float, default=10.0)
    p.add_argument("--conditioning", choices=protocol.CONDITIONING, default="text",
                   help="text: the official behaviour (the decoder is prompted with the reply text); embedding: "
                        "the decoder is conditioned on the LLM's projected [AUD] states, as the paper trains")
    p.add_argument("--want-audio", choices=("auto", "yes", "no"), default="auto")
    p.add_argument("--out", metavar="FILE", help="write the reply's audio here")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("convert", help="keep only the trained tensors of an official checkpoint.pth",
                       description="Write the tensors M2UGen trained (adapters, LoRA, biases, norms, embeddings, "
                                   "bridges, projector, gates) to a .safetensors file that loads memory-mapped; "
                                   "frozen base weights come from their own sources at load (see README).")
    p.add_argument("src", help="official checkpoint.pth")
    p.add_argument("dst", help="output .safetensors")
    p.set_defaults(func=cmd_convert)
