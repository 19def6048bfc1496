"""The filter and order-by parser: MLflow's documented filters parse to the right conditions; bad
filters raise ValueError naming the position and what was expected."""

from __future__ import annotations

import re

import pytest

from expstore.catalog.filters import And, Condition, Field, Or, OrderItem, parse_filter, parse_order_by

M, P, T, A = "metrics", "params", "tags", "attributes"


def one(node) -> tuple[str, str, str, object]:
    assert isinstance(node, Condition)
    return node.field.kind, node.field.key, node.op, node.value


# MLflow's tests/utils/test_search_utils.py::test_filter and its search-syntax docs page
@pytest.mark.parametrize(("text", "expected"), [
    ("metric.acc >= 0.94", [(M, "acc", ">=", 0.94)]),
    ("metric.acc>=100", [(M, "acc", ">=", 100.0)]),
    ("params.m!='tf'", [(P, "m", "!=", "tf")]),
    ('params."m"!="tf"', [(P, "m", "!=", "tf")]),
    ('metric."legit name" >= 0.243', [(M, "legit name", ">=", 0.243)]),
    ("metrics.XYZ = 3", [(M, "XYZ", "=", 3.0)]),
    ('params."cat dog" = "pets"', [(P, "cat dog", "=", "pets")]),
    ('metrics."X-Y-Z" = 3', [(M, "X-Y-Z", "=", 3.0)]),
    ('metrics."X//Y#$$@&Z" = 3', [(M, "X//Y#$$@&Z", "=", 3.0)]),
    ("params.model = 'LinearRegression'", [(P, "model", "=", "LinearRegression")]),
    ("metrics.rmse < 1 and params.model_class = 'LR'", [(M, "rmse", "<", 1.0), (P, "model_class", "=", "LR")]),
    ("`metric`.a >= 0.1", [(M, "a", ">=", 0.1)]),
    ("`params`.model >= 'LR'", [(P, "model", ">=", "LR")]),
    ("tags.version = 'commit-hash'", [(T, "version", "=", "commit-hash")]),
    ("`tags`.source_name = 'a notebook'", [(T, "source_name", "=", "a notebook")]),
    ('metrics."accuracy.2.0" > 5', [(M, "accuracy.2.0", ">", 5.0)]),
    ("metrics.`spacey name` > 5", [(M, "spacey name", ">", 5.0)]),
    ('params."p.a.r.a.m" != "a"', [(P, "p.a.r.a.m", "!=", "a")]),
    ('tags."t.a.g" = "a"', [(T, "t.a.g", "=", "a")]),
    ("attribute.start_time >= 1234", [(A, "start_time", ">=", 1234.0)]),
    ("run.status = 'RUNNING'", [(A, "status", "=", "RUNNING")]),
    ("tags.version IS NULL", [(T, "version", "IS NULL", None)]),
    ("params.lr IS NOT NULL", [(P, "lr", "IS NOT NULL", None)]),
    ("tags.a IS NULL AND params.b = 'val'", [(T, "a", "IS NULL", None), (P, "b", "=", "val")]),
    ('params.m = "L\'Hosp"', [(P, "m", "=", "L'Hosp")]),
    ("params.model = \"LogisticRegression\" and params.lambda = \"0.001\" and metrics.error <= 0.05",
     [(P, "model", "=", "LogisticRegression"), (P, "lambda", "=", "0.001"), (M, "error", "<=", 0.05)]),
    ('attributes.status = "FAILED"', [(A, "status", "=", "FAILED")]),
    ("params.model = 'CNN' and params.layers = '10' and metrics.'prediction accuracy' >= 0.945",
     [(P, "model", "=", "CNN"), (P, "layers", "=", "10"), (M, "prediction accuracy", ">=", 0.945)]),
    ('tags."mlflow.runName" = "keras-hyperparam-search"', [(T, "mlflow.runName", "=", "keras-hyperparam-search")]),
    ("metrics.accuracy_score < 99.90", [(M, "accuracy_score", "<", 99.9)]),
    # the superset: dotted names unquoted, bare attributes, LIKE / ILIKE / IN, doubled quotes
    ("params.optimizer.lr < 1e-3", [(P, "optimizer.lr", "<", 0.001)]),
    ("status = 'completed' AND duration_seconds > 10", [(A, "status", "=", "completed"), (A, "duration_seconds", ">", 10.0)]),
    ("name LIKE 'sweep-%' and tags.host ILIKE 'GPU%'", [(A, "name", "LIKE", "sweep-%"), (T, "host", "ILIKE", "GPU%")]),
    ("params.opt IN ('adam', 'sgd')", [(P, "opt", "IN", ("adam", "sgd"))]),
    ("params.opt NOT IN ('adam')", [(P, "opt", "NOT IN", ("adam",))]),
    ("params.x = 'it''s'", [(P, "x", "=", "it's")]),
])
def test_mlflow_filters_parse(text: str, expected: list[tuple]) -> None:
    node = parse_filter(text)
    items = node.items if isinstance(node, And) else (node,)
    assert [one(item) for item in items] == expected


def test_blank_filters_select_everything() -> None:
    assert parse_filter(None) is None and parse_filter("") is None and parse_filter("   ") is None


def test_or_and_parentheses_bind_as_in_sql() -> None:
    node = parse_filter("metrics.a < 1 OR metrics.b < 2 AND (params.c = 'x' OR tags.d = 'y')")
    assert isinstance(node, Or)
    first, second = node.items
    assert one(first) == (M, "a", "<", 1.0)
    assert isinstance(second, And) and isinstance(second.items[1], Or)
    assert [one(c) for c in second.items[1].items] == [(P, "c", "=", "x"), (T, "d", "=", "y")]


@pytest.mark.parametrize(("text", "position", "expected"), [
    ("metric.acc >= 0.94; metrics.rmse < 1", 18, "expected a name, number"),
    ("m.acc >= 0.94", 0, "expected an entity type"),
    ("acc >= 0.94", 0, "expected a run attribute"),
    ("attribute.lifecycle_stage = 'ACTIVE'", 0, "expected a run attribute"),
    ("metrics.A > 0.1 NAND params.B = 'LR'", 16, "expected AND, OR"),
    ("`metrics.A > 0.1", 0, "expected a closing `"),
    ("params.acc = LR", 13, "expected a number or a quoted string"),
    ("params.acc = 'LR", 13, "expected a closing '"),
    ("tags.acc = = 'LR'", 11, "expected a number or a quoted string"),
    ("attribute.status IS 'RUNNING'", 20, "expected NULL after IS"),
    ("params.acc LR", 11, "expected a comparison operator"),
    ("metric.acc !=", 13, "expected a number or a quoted string, got the end of the text"),
    ("1=1", 0, "expected a name such as"),
    ("(metrics.a < 1", 14, "expected ')' to close the '(' at position 0"),
    ("(" * 2000 + "metrics.a < 1" + ")" * 2000, 100, "expected at most 100 nested parentheses"),
    ("metrics.a ~ 1", 10, "expected a name, number"),
    ("metrics.a IN 1", 13, "expected '(' after IN"),
    ("params.a NOT = 'x'", 13, "expected LIKE, ILIKE or IN after NOT"),
    ("params.a LIKE 3", 14, "expected a quoted pattern after LIKE"),
])
def test_bad_filters_name_position_and_expectation(text: str, position: int, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid filter at position {position}: {expected}")):
        parse_filter(text)


def test_order_by_terms() -> None:
    assert parse_order_by(["metrics.loss", "start_time DESC", "params.`a b` asc"]) == [
        OrderItem(Field(M, "loss"), True), OrderItem(Field(A, "start_time"), False), OrderItem(Field(P, "a b"), True)]
    assert parse_order_by("metrics.loss DESC") == [OrderItem(Field(M, "loss"), False)]
    with pytest.raises(ValueError, match=r"position 13: expected ASC, DESC .*in order_by term 'metrics.loss down'"):
        parse_order_by(["metrics.loss down"])
    with pytest.raises(TypeError, match="order_by terms must be str"):
        parse_order_by([3])
    with pytest.raises(TypeError, match="filter must be a str"):
        parse_filter(3)
