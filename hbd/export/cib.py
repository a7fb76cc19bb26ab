"""Render a Plan as a Pacemaker CIB document.

The document is complete enough for `crm_verify --xml-file` (configuration
and an empty status).  An admin loads its configuration section into a
running cluster with `pcs cluster cib-push cib.xml --config` or
`cibadmin --replace --scope configuration --xml-file cib.xml`, which keep the
live CIB's epoch and status.  Node ids are 1..N in ha.cf order, the same ids
corosync.conf gives them, so the nodes section matches what Pacemaker will
learn from Corosync.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hbd.export.model import (
    Clone,
    Colocation,
    Constraint,
    Group,
    NodePreference,
    Order,
    Pairs,
    Plan,
    Primitive,
    Resource,
    RuleLocation,
)

# 3.7 is the oldest schema that knows the Promoted/Unpromoted role names (Pacemaker 2.1).
SCHEMA = "pacemaker-3.7"


def _nvpairs(parent: ET.Element, tag: str, owner: str, pairs: Pairs,
             set_id: str | None = None) -> None:
    if not pairs:
        return
    set_id = set_id or f"{owner}-{tag}"
    block = ET.SubElement(parent, tag, id=set_id)
    for name, value in pairs:
        ET.SubElement(block, "nvpair", id=f"{set_id}-{name}", name=name, value=value)


def _primitive(parent: ET.Element, p: Primitive) -> None:
    attrs = {"id": p.id, "class": p.standard}
    if p.provider:
        attrs["provider"] = p.provider
    attrs["type"] = p.type
    el = ET.SubElement(parent, "primitive", attrs)
    _nvpairs(el, "instance_attributes", p.id, p.params)
    if p.ops:
        ops = ET.SubElement(el, "operations")
        for op in p.ops:
            op_attrs = {"id": f"{p.id}-{op.name}-interval-{op.interval}", "name": op.name,
                        "interval": op.interval, "timeout": op.timeout}
            if op.role:
                op_attrs["role"] = op.role
            ET.SubElement(ops, "op", op_attrs)


def _resource(parent: ET.Element, res: Resource) -> None:
    if isinstance(res, Group):
        el = ET.SubElement(parent, "group", id=res.id)
        for member in res.members:
            _primitive(el, member)
    elif isinstance(res, Clone):
        el = ET.SubElement(parent, "clone", id=res.id)
        _nvpairs(el, "meta_attributes", res.id, res.meta)
        _primitive(el, res.child)
    else:
        _primitive(parent, res)


def _constraint(parent: ET.Element, c: Constraint) -> None:
    if isinstance(c, NodePreference):
        ET.SubElement(parent, "rsc_location", id=c.id, rsc=c.rsc, node=c.node, score=c.score)
    elif isinstance(c, RuleLocation):
        loc = ET.SubElement(parent, "rsc_location", id=c.id, rsc=c.rsc)
        rule_attrs = {"id": c.rule_id}
        if c.score_attribute:
            rule_attrs["score-attribute"] = c.score_attribute
        else:
            rule_attrs["score"] = c.score or "0"
        if c.role:
            rule_attrs["role"] = c.role
        if len(c.expressions) > 1:
            rule_attrs["boolean-op"] = c.boolean_op
        rule = ET.SubElement(loc, "rule", rule_attrs)
        for n, expr in enumerate(c.expressions):
            expr_attrs = {"id": f"{c.rule_id}-expr" + (f"-{n}" if n else ""),
                          "attribute": expr.attribute, "operation": expr.operation}
            if expr.value is not None:
                expr_attrs["value"] = expr.value
            ET.SubElement(rule, "expression", expr_attrs)
    elif isinstance(c, Colocation):
        attrs = {"id": c.id, "rsc": c.rsc, "with-rsc": c.with_rsc, "score": c.score}
        if c.with_rsc_role:
            attrs["with-rsc-role"] = c.with_rsc_role
        ET.SubElement(parent, "rsc_colocation", attrs)
    elif isinstance(c, Order):
        ET.SubElement(parent, "rsc_order", {
            "id": c.id, "first": c.first, "first-action": c.first_action,
            "then": c.then, "then-action": c.then_action, "kind": "Mandatory"})


def render_cib(plan: Plan, *, comment: str | None = None) -> str:
    """The CIB as indented XML text, ending in a newline."""
    root = ET.Element("cib", {"validate-with": SCHEMA, "epoch": "1", "num_updates": "0",
                              "admin_epoch": "0"})
    if comment:
        # "--" may not appear inside an XML comment.
        root.append(ET.Comment(" " + comment.replace("--", "- -") + " "))
    configuration = ET.SubElement(root, "configuration")
    crm_config = ET.SubElement(configuration, "crm_config")
    _nvpairs(crm_config, "cluster_property_set", "cib-bootstrap-options", plan.properties,
             set_id="cib-bootstrap-options")
    nodes = ET.SubElement(configuration, "nodes")
    for number, name in enumerate(plan.nodes, start=1):
        ET.SubElement(nodes, "node", id=str(number), uname=name)
    resources = ET.SubElement(configuration, "resources")
    for res in plan.resources:
        _resource(resources, res)
    constraints = ET.SubElement(configuration, "constraints")
    for c in plan.constraints:
        _constraint(constraints, c)
    rsc_defaults = ET.SubElement(configuration, "rsc_defaults")
    _nvpairs(rsc_defaults, "meta_attributes", "rsc-options", plan.rsc_defaults,
             set_id="rsc-options")
    ET.SubElement(root, "status")
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"
