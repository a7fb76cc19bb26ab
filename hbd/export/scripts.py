"""Render a Plan as a pcs shell script and as crmsh configuration input.

Both say exactly what the CIB says, with the same ids, so an admin can use
whichever tool their distribution ships:

* pcs.sh edits a CIB file with `pcs -f` and pushes it in one step at the end
  (`sh pcs.sh`), or only edits a file it is given (`sh pcs.sh FILE`), which
  is also how the tests replay it against an empty CIB;
* crmsh.txt is input for `crm configure load update crmsh.txt`.

Operations are spelled out and pcs is told `--no-default-ops`, so neither
tool adds operations the CIB does not have.
"""

from __future__ import annotations

import shlex

from hbd.export.model import (
    Clone,
    Colocation,
    Constraint,
    Expression,
    Group,
    NodePreference,
    Order,
    Pairs,
    Plan,
    Primitive,
    RuleLocation,
)


def _assignments(pairs: Pairs) -> list[str]:
    return [shlex.quote(f"{name}={value}") for name, value in pairs]


def _pcs_ops(p: Primitive) -> list[str]:
    words: list[str] = []
    for op in p.ops:
        words += ["op", op.name, f"interval={op.interval}", f"timeout={op.timeout}"]
        if op.role:
            words.append(f"role={op.role}")
    return words


def _pcs_create(p: Primitive, tail: list[str]) -> str:
    if p.standard == "stonith":  # pcs creates fence devices with its own command
        return " ".join(["stonith", "create", p.id, p.type, *_assignments(p.params),
                         *_pcs_ops(p), *tail, "--force"])
    words = ["resource", "create", p.id, p.agent, *_assignments(p.params),
             "--no-default-ops", *_pcs_ops(p), *tail]
    if p.standard != "ocf" or p.provider not in ("heartbeat", "pacemaker"):
        # pcs refuses agents it cannot find where it runs; scripts and DRBD's agent may
        # exist only on the cluster nodes.
        words.append("--force")
    return " ".join(words)


def _pcs_expression(expr: Expression) -> str:
    words = [expr.operation, expr.attribute] if expr.value is None else [
        expr.attribute, expr.operation, expr.value]
    return " ".join(shlex.quote(w) for w in words)


def _pcs_constraint(c: Constraint) -> str:
    if isinstance(c, NodePreference):
        return f"constraint location add {c.id} {c.rsc} {shlex.quote(c.node)} {c.score}"
    if isinstance(c, RuleLocation):
        words = ["constraint", "location", c.rsc, "rule", f"id={c.rule_id}",
                 f"constraint-id={c.id}"]
        if c.role:
            words.append(f"role={c.role}")
        words.append(f"score-attribute={c.score_attribute}" if c.score_attribute
                     else f"score={c.score}")
        joiner = f" {c.boolean_op} "
        return " ".join(words) + " " + joiner.join(_pcs_expression(e) for e in c.expressions)
    if isinstance(c, Colocation):
        role = f"{c.with_rsc_role} " if c.with_rsc_role else ""
        return f"constraint colocation add {c.rsc} with {role}{c.with_rsc} {c.score} id={c.id}"
    assert isinstance(c, Order)
    return (f"constraint order {c.first_action} {c.first} then {c.then_action} {c.then} "
            f"id={c.id}")


def render_pcs(plan: Plan, *, comment_lines: tuple[str, ...] = ()) -> str:
    """A POSIX shell script of pcs commands building the same configuration as the CIB."""
    out = ["#!/bin/sh"]
    out += [f"# {line}" for line in comment_lines]
    out += [
        "# Usage: sh pcs.sh            edit a copy of the running cluster's CIB, then push it",
        "#        sh pcs.sh CIB-FILE   only edit CIB-FILE (from 'pcs cluster cib CIB-FILE')",
        "set -eu",
        'cib="${1:-}"',
        "push=no",
        'if [ -z "$cib" ]; then',
        '    cib="$(mktemp)"',
        '    pcs cluster cib "$cib"',
        "    push=yes",
        "fi",
        "",
    ]
    commands = ["property set " + " ".join(_assignments(plan.properties))]
    commands.append("resource defaults update " + " ".join(_assignments(plan.rsc_defaults)))
    for res in plan.resources:
        if isinstance(res, Group):
            commands += [_pcs_create(m, ["--group", res.id]) for m in res.members]
        elif isinstance(res, Clone):
            promotable = dict(res.meta).get("promotable") == "true"
            meta = [pair for pair in res.meta if pair[0] != "promotable"]
            kind = "promotable" if promotable else "clone"
            commands.append(_pcs_create(res.child, [kind, res.id, *_assignments(tuple(meta))]))
        else:
            commands.append(_pcs_create(res, []))
    commands += [_pcs_constraint(c) for c in plan.constraints]
    out += [f'pcs -f "$cib" {command}' for command in commands]
    out += [
        "",
        'if [ "$push" = yes ]; then',
        '    pcs cluster cib-push "$cib" --config',
        '    rm -f "$cib"',
        "fi",
        "",
    ]
    return "\n".join(out)


def _crm_value(value: str) -> str:
    if value and all(ch.isalnum() or ch in "._-/:@,+%" for ch in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _crm_pairs(pairs: Pairs) -> str:
    return " ".join(f"{name}={_crm_value(value)}" for name, value in pairs)


def _crm_primitive(p: Primitive) -> str:
    line = f"primitive {p.id} {p.agent}"
    if p.params:
        line += f" \\\n    params {_crm_pairs(p.params)}"
    for op in p.ops:
        role = f" role={op.role}" if op.role else ""
        line += f" \\\n    op {op.name} interval={op.interval} timeout={op.timeout}{role}"
    return line


def _crm_expression(expr: Expression) -> str:
    if expr.value is None:
        return f"{expr.operation} {expr.attribute}"
    return f"{expr.attribute} {expr.operation} {_crm_value(expr.value)}"


def _crm_constraint(c: Constraint) -> str:
    if isinstance(c, NodePreference):
        return f"location {c.id} {c.rsc} {c.score}: {c.node}"
    if isinstance(c, RuleLocation):
        role = f" role={c.role}" if c.role else ""
        score = c.score_attribute or c.score
        joiner = f" {c.boolean_op} "
        return (f"location {c.id} {c.rsc} rule $id={c.rule_id}{role} {score}: "
                + joiner.join(_crm_expression(e) for e in c.expressions))
    if isinstance(c, Colocation):
        role = f":{c.with_rsc_role}" if c.with_rsc_role else ""
        score = "inf" if c.score == "INFINITY" else c.score
        return f"colocation {c.id} {score}: {c.rsc} {c.with_rsc}{role}"
    assert isinstance(c, Order)
    return f"order {c.id} Mandatory: {c.first}:{c.first_action} {c.then}:{c.then_action}"


def render_crmsh(plan: Plan, *, comment_lines: tuple[str, ...] = ()) -> str:
    """crmsh configuration text: `crm configure load update FILE`."""
    out = [f"# {line}" for line in comment_lines]
    out.append("# Load with: crm configure load update crmsh.txt")
    out.append(f"property cib-bootstrap-options: {_crm_pairs(plan.properties)}")
    out += [f"node {n}: {name}" for n, name in enumerate(plan.nodes, start=1)]
    for res in plan.resources:
        if isinstance(res, Group):
            out += [_crm_primitive(m) for m in res.members]
            out.append(f"group {res.id} {' '.join(m.id for m in res.members)}")
        elif isinstance(res, Clone):
            out.append(_crm_primitive(res.child))
            meta = f" \\\n    meta {_crm_pairs(res.meta)}" if res.meta else ""
            out.append(f"clone {res.id} {res.child.id}{meta}")
        else:
            out.append(_crm_primitive(res))
    out += [_crm_constraint(c) for c in plan.constraints]
    out.append(f"rsc_defaults rsc-options: {_crm_pairs(plan.rsc_defaults)}")
    return "\n".join(out) + "\n"
