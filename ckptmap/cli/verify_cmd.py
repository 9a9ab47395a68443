"""`ckptmap verify SRC DST` and `ckptmap verify SRC --into FRAMEWORK`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from .. import api
from ..errors import UsageError
from .options import pairs

# Frameworks a checkpoint can be written for on its own (ONNX is written into an existing model).
_INTO = " or ".join(dict.fromkeys(f.framework for f in api.formats() if f.preferred and not f.template))

if TYPE_CHECKING:  # verification modules load with the command, not with the CLI
    from ..verification.report import IntoReport, VerifyReport


def verify(
    src: Annotated[str, typer.Argument(help="The original checkpoint.")],
    dst: Annotated[str | None, typer.Argument(help="The converted checkpoint to check against SRC.")] = None,
    into: Annotated[
        str | None, typer.Option("--into", help=f"Instead: restore SRC into fresh {_INTO} models.")
    ] = None,
    mapping: Annotated[
        list[str] | None, typer.Option("--mapping", "-m", help="Mapping(s) SRC was converted with.")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Mapping parameter KEY=VALUE.")] = None,
    rename: Annotated[
        list[str] | None, typer.Option("--rename", help="REGEX=REPLACEMENT used in the conversion.")
    ] = None,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="Max abs error (default 1e-5 for float32).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Count declared approximations as failures.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    report_html: Annotated[
        str | None,
        typer.Option(
            "--report", help="Also write a self-contained HTML page: verdicts, errors per time step."
        ),
    ] = None,
) -> None:
    """Prove a conversion with the frameworks: restore both checkpoints into fresh RNNs, run them on the
    same inputs, compare (exit 0 equal, 1 differs, 2 error). With --into, check that SRC restores.

    Examples:

      ckptmap verify sample_checkpoints/tf1_lstm2 lstm.pt --mapping tf1-to-torch

      ckptmap verify old/model.ckpt --into tf1
    """
    params, renames = pairs(set_ or [], "--set", first=True), pairs(rename or [], "--rename", first=False)
    if report_html and into is not None:
        raise UsageError("--report draws a verification of SRC against DST, not --into.")
    if (dst is None) == (into is None):
        raise UsageError("Give either DST (verify a conversion) or --into tf1|torch (verify a restore).")
    if into is not None:
        report: VerifyReport | IntoReport = api.verify(src, None, mapping or None, params, renames, into=into)
        print(json.dumps(report.to_dict(), indent=2) if json_output else "\n".join(render_into(report)))
    else:
        assert dst is not None
        report = api.verify(src, dst, mapping or None, params, renames, tolerance=tolerance, strict=strict)
        print(json.dumps(report.to_dict(), indent=2) if json_output else "\n".join(render_verify(report)))
        if report_html:
            api.write_report(report, report_html)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def render_verify(report: VerifyReport) -> list[str]:
    from ..verification.report import APPROXIMATE, DRIFT_FACTOR, EQUAL

    used = ", ".join(report.mappings) or "no mapping"
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    tolerance = ", ".join(sorted({f"{p.tolerance:g}" for p in report.pairs})) or "-"
    with_params = f" ({params})" if params else ""
    lines = [
        f"Verify {report.source} against {report.destination} with {used}{with_params}, tolerance {tolerance}"
    ]
    rows = [("RNN", "counterpart", "output abs", "rel", "state abs", "rel", "verdict")]
    notes = []
    for i, p in enumerate(report.pairs, 1):
        counterpart = (
            f"{p.destination.cell_type} at {p.destination.scope or '(root)'}" if p.destination else "-"
        )
        out_abs = max((c.output_abs for c in p.cases), default=None)
        out_rel = max((c.output_rel for c in p.cases), default=None)
        st_abs = max((c.state_abs for c in p.cases), default=None)
        st_rel = max((c.state_rel for c in p.cases), default=None)
        verdict = p.verdict.upper()
        rows.append(
            (
                f"{i}. {p.source.cell_type} at {p.source.scope or '(root)'}",
                counterpart,
                *(_num(v) for v in (out_abs, out_rel, st_abs, st_rel)),
                verdict,
            )
        )
        loosest = max(p.cases, key=lambda c: c.allowed, default=None)
        if loosest is not None and any(c.max_abs > p.tolerance for c in p.cases):  # the allowance mattered
            drift = loosest.allowed / DRIFT_FACTOR
            notes.append(
                f"{i}. float rounding alone moves these outputs by up to {drift:.1e} ({loosest.case}); "
                f"errors there were judged against {DRIFT_FACTOR:g}x that."
            )
        if p.verdict == APPROXIMATE:
            notes.append(
                f"{i}. approximate, as the mapping declares: {p.approximate} First step from zero state: "
                f"max abs {_num(p.first_step_abs)}."
            )
        elif p.verdict != EQUAL:
            why = p.message or f"max abs error {_num(p.max_abs)} > tolerance {p.tolerance:g}"
            declared = f" The mapping declares it approximate: {p.approximate}" if p.approximate else ""
            notes.append(f"{i}. {why}.{declared}")
            wrong = p.blamed_gates()
            if wrong:
                shown = "; ".join(f"{g.label} off by {_num(g.max_abs)}" for g in wrong[:4])
                notes.append(f"{i}. gates whose pre-activations differ: {shown}.")
        notes += [f"{i}. {n}." for n in p.notes]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines += [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines += [f"  {n}" for n in notes]
    if report.unpaired:
        lines.append(
            f"  Not made from any RNN of the source: {', '.join(r.describe() for r in report.unpaired)}"
        )
    if not report.pairs:
        lines.append("No RNN found in the source to verify.")
    lines.append(summary(report))
    return lines


def summary(report: VerifyReport) -> str:
    """`OK: 1 equal, 2 approximate (max abs error 1.4, allowed by tf1-to-torch rule 'gru')`: the
    verdicts counted, never a bare OK beside a large error."""
    from ..verification.report import APPROXIMATE, DIFFERS, EQUAL, MISSING, NO_RESTORE

    parts = []
    for verdict in (EQUAL, APPROXIMATE, DIFFERS, NO_RESTORE, MISSING):
        pairs = [p for p in report.pairs if p.verdict == verdict]
        if not pairs:
            continue
        details = []
        if verdict in (APPROXIMATE, DIFFERS) and any(p.cases for p in pairs):  # not: "different RNNs"
            details.append(f"max abs error {max(p.max_abs for p in pairs if p.cases):.2g}")
        if verdict == APPROXIMATE:
            rules = ", ".join(dict.fromkeys(p.approximated_by or "the mapping" for p in pairs))
            details.append("not allowed: --strict" if report.strict else f"allowed by {rules}")
        parts.append(f"{len(pairs)} {verdict}" + (f" ({', '.join(details)})" if details else ""))
    return f"{'OK' if report.ok else 'FAILED'}: {', '.join(parts) or 'no RNN verified'}."


def render_into(report: IntoReport) -> list[str]:
    via = f" after {', '.join(report.mappings)}" if report.mappings else ""
    lines = [f"Restore {report.source} into fresh {report.framework} models{via}"]
    for r in report.results:
        status = "restores and runs" if r.ok else "does NOT restore"
        lines.append(f"  {r.rnn.describe()}: {status}")
        for m in r.missing:
            hint = f" (did you mean {m.suggestion}?)" if m.suggestion else ""
            lines.append(f"    missing {m.name} {list(m.shape)}: it would stay uninitialized{hint}")
        for name, wants, has in r.mismatched:
            lines.append(
                f"    shape mismatch {name}: the model needs {list(wants)}, the checkpoint has {list(has)}"
            )
        if r.error:
            lines.append(f"    {report.framework} says: {r.error}")
        lines += [f"    note: {n}" for n in r.notes]
    if report.unused:
        lines.append(f"  Not read by any model ({len(report.unused)}):")
        for u in report.unused:
            hint = f" (the model wants {u.suggestion})" if u.suggestion else ""
            lines.append(f"    {u.name} {list(u.shape)}{hint}")
    lines += [f"  Hint: {h}" for h in report.hints]
    lines.append(
        "OK: every RNN restores completely and runs." if report.ok else "FAILED: the restore is incomplete."
    )
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"
