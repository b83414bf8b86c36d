"""``m2ugen doctor [--weights SPEC]``: check a weights spec before waiting for a load (``m2ugen.doctor``).

One line per check; exit 0 when nothing blocks a load, 4 (failed) when something does.
"""

from __future__ import annotations

import logging

from server.cli.common import EXIT_FAILED, EXIT_OK


def cmd_doctor(args) -> int:
    logging.basicConfig(level=logging.ERROR)
    from m2ugen.doctor import blockers, diagnose

    checks = diagnose(args.weights, device=args.device, dtype=None if args.dtype == "auto" else args.dtype,
                      preset=args.preset)
    for c in checks:
        print(c.line())
    bad = blockers(checks)
    print(f"{len(bad)} blocker(s)" if bad else "nothing blocks a load")
    return EXIT_FAILED if bad else EXIT_OK


def quiet_check(weights: str | None, device: str, dtype: str | None, log: logging.Logger) -> bool:
    """For ``serve``: log only the problems; False when one blocks the load."""
    from m2ugen.doctor import FAIL, OK, diagnose

    ok = True
    for c in diagnose(weights, device=device, dtype=dtype):
        if c.status == OK:
            continue
        (log.error if c.status == FAIL else log.warning)("doctor: %s", c.line())
        ok &= c.status != FAIL
    return ok


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check the weights (files, layout, tokenizer, gates, memory) without loading",
                       description="Check a weights spec before a load: every file present, the checkpoint's "
                                   "names and shapes (from the file headers), the tokenizer, the Hugging Face "
                                   "directories, the dtype on the device, the memory the weights need against "
                                   "the free memory, and whether the attention gates are zero (a deaf "
                                   "checkpoint). Exit 0: nothing blocks a load; 4: something does.")
    p.add_argument("--weights", metavar="SPEC", help="weights.json, a directory or a checkpoint (default: "
                                                     "M2UGEN_WEIGHTS or <config dir>/weights.json)")
    p.add_argument("--preset", help="the preset, when the checkpoint's shapes do not tell it")
    p.add_argument("--device", default="cpu", help="where the model would run (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="dtype it would run in (auto: the weights')")
    p.set_defaults(func=cmd_doctor)
