"""What the worker runs for each job kind (the kinds themselves are described in ``protocol.KIND_TABLE``).

One module per family of kinds, each with the same face:

- ``STAGES``: {kind: {stage: (lo, hi)}}, the share of the job's overall progress each stage spans;
- ``run(worker, job)``: run one job to its end through the worker's ``finish`` / ``progress`` / ``emit``
  (the worker owns the states, the events and cancellation; a kind module owns the work);
- optionally ``check_inputs(model_inputs)``: submit-time checks of the decoded inputs (raise ProtocolError).

``RUNNERS`` maps every kind in the protocol to its module; ``tests/test_protocol_table.py`` holds them
to each other.
"""

from __future__ import annotations

from types import ModuleType

from server.kinds import chat, finetune, stems, transcribe

RUNNERS: dict[str, ModuleType] = {kind: module for module in (chat, transcribe, stems, finetune)
                                  for kind in module.STAGES}


def runner(kind: str) -> ModuleType:
    return RUNNERS[kind]


def stage_spans(kind: str) -> dict[str, tuple[float, float]]:
    return RUNNERS[kind].STAGES[kind]


def check_inputs(kind: str, model_inputs: dict) -> None:
    """The kind's own submit-time checks of its decoded inputs (a ProtocolError refuses the submit)."""
    check = getattr(RUNNERS[kind], "check_inputs", None)
    if check is not None:
        check(model_inputs)
